"""LayerNorm: normalise each example over its trailing axes (ConvNeXt, transformers)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class LayerNorm(Layer):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last ``len(normalized_shape)``
    axes of each example (PyTorch's ``nn.LayerNorm``; ONNX ``LayerNormalization``).

    Args:
        normalized_shape: The trailing per-example shape normalised together, e.g. ``(C,)``
            for a channels-last (N, H, W, C) tensor.
        eps: Added to the variance.
        elementwise_affine: Learn ``weight`` (ones) and ``bias`` (zeros) of that shape.

    Example:
        >>> LayerNorm(2).forward(np.array([[1.0, 3.0]]))
        array([[-0.999995,  0.999995]], dtype=float32)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 dtype=np.float32) -> None:
        super().__init__()
        shape = (normalized_shape,) if np.isscalar(normalized_shape) else normalized_shape
        self.normalized_shape = tuple(int(d) for d in shape)
        if not self.normalized_shape or min(self.normalized_shape) < 1:
            raise ConfigError(f"LayerNorm: normalized_shape must be positive sizes, got {shape}")
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype=dtype)
            self.params["bias"] = np.zeros(self.normalized_shape, dtype=dtype)
            self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def output_shape(self, input_shape):
        k = len(self.normalized_shape)
        if tuple(input_shape[len(input_shape) - k:]) != self.normalized_shape or len(input_shape) < k:
            raise ShapeError(f"{self.where()}: per-example shape {tuple(input_shape)} does not end "
                             f"in the normalised shape {self.normalized_shape}")
        return tuple(input_shape)

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        axes = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        centred = x - mean
        inv = 1.0 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + self.eps)
        xhat = centred * inv
        self._cache = (xhat, inv, axes) if keep_cache else None
        if not self.elementwise_affine:
            return xhat.astype(x.dtype, copy=False)
        return (xhat * self.params["weight"] + self.params["bias"]).astype(x.dtype, copy=False)

    def _backward(self, dout):
        xhat, inv, axes = self._cache
        lead = tuple(range(dout.ndim - len(axes)))
        g = dout
        if self.elementwise_affine:
            self.grads["weight"] = (dout * xhat).sum(axis=lead).astype(self.params["weight"].dtype)
            self.grads["bias"] = dout.sum(axis=lead).astype(self.params["bias"].dtype)
            g = dout * self.params["weight"]
        # dx = inv * (g - mean(g) - xhat * mean(g * xhat)), means over the normalised axes
        dx = inv * (g - g.mean(axis=axes, keepdims=True)
                    - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        return dx.astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps:g}" + (
            "" if self.elementwise_affine else ", elementwise_affine=False")
