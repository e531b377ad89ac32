"""Elementwise activations: RELU and friends. Each keeps its backward formula beside its forward."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.functional import activation as F
from volnet.layers.base import Layer


class Elementwise(Layer):
    """An elementwise activation: the output volume has the input's shape.

    @public (the API reference documents it: its subclasses inherit these members)
    """

    def output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(Elementwise):
    """max(0, x), the lecture's RELU layer.

    Example:
        >>> ReLU().forward(np.array([[-1.0, 2.0]]))
        array([[0., 2.]])
    """

    _reuses_cache = True

    def _forward(self, x, training, keep_cache):
        # the cache is the mask x > 0; the previous step's mask is dead now, its array reused
        out, self._cache = F.relu_forward(x, keep_cache, reuse=self._reusable_cache())
        return out

    def _backward(self, dout):
        return F.relu_backward(dout, self._cache)   # gradient passes where the input was positive

    def skip_fused(self, out) -> None:
        """Record that a batch norm applied this ReLU (``forward_relu``): nothing is cached
        here, backward goes through the batch norm's ``backward_relu``."""
        self._cache, self._out_shape = None, out.shape

    def add_forward(self, a, b, training=False, *, cache=None):
        """``self.forward(a + b, ...)`` in one pass (a residual block's sum and activation);
        same output and the same cache, so ``backward`` is unchanged."""
        keep = training if cache is None else bool(cache)
        out, self._cache = F.add_relu(a, b, keep, reuse=self._reusable_cache())
        self._out_shape = out.shape
        return out


class LeakyReLU(Elementwise):
    """x if x > 0 else negative_slope * x.

    Example:
        >>> LeakyReLU(0.1).forward(np.array([[-1.0, 2.0]]))
        array([[-0.1,  2. ]])
    """

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def _forward(self, x, training, keep_cache):
        positive = x > 0
        self._cache = positive if keep_cache else None
        return np.where(positive, x, x * self.negative_slope).astype(x.dtype, copy=False)

    def _backward(self, dout):
        return np.where(self._cache, dout, dout * self.negative_slope).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Tanh(Elementwise):
    """tanh(x); backward uses 1 - tanh(x)^2 from the saved output."""

    def _forward(self, x, training, keep_cache):
        out = np.tanh(x)
        self._cache = out if keep_cache else None
        return out

    def _backward(self, dout):
        return dout * (1.0 - self._cache * self._cache)


class Sigmoid(Elementwise):
    """1 / (1 + exp(-x)), computed without overflow; backward s(1 - s)."""

    def _forward(self, x, training, keep_cache):
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
        self._cache = out if keep_cache else None
        return out

    def _backward(self, dout):
        return dout * self._cache * (1.0 - self._cache)


class Softmax(Elementwise):
    """Softmax along ``dim`` (default 1, the class or channel axis)."""

    def __init__(self, dim: int = 1):
        super().__init__()
        if dim == 0:
            raise ConfigError("Softmax over the batch axis (dim=0) is not supported; use dim >= 1")
        self.dim = int(dim)

    def _check_input(self, x):
        if not -x.ndim <= self.dim < x.ndim or self.dim % x.ndim == 0:
            raise ShapeError(f"{self.where()} needs an input with axis {self.dim} besides the batch "
                             f"axis, got shape {x.shape}")

    def _forward(self, x, training, keep_cache):
        shifted = x - x.max(axis=self.dim, keepdims=True)
        e = np.exp(shifted)
        out = e / e.sum(axis=self.dim, keepdims=True)
        self._cache = out if keep_cache else None
        return out

    def _backward(self, dout):
        s = self._cache
        return s * (dout - (dout * s).sum(axis=self.dim, keepdims=True))

    def extra_repr(self):
        return f"dim={self.dim}"


class Identity(Elementwise):
    """Passes its input through unchanged (a placeholder in surgery, like PyTorch's)."""

    def _forward(self, x, training, keep_cache):
        self._cache = True if keep_cache else None
        return x

    def _backward(self, dout):
        return dout


class Scale(Elementwise):
    """``x * factor`` with a constant factor (no parameters, no state-dict keys).

    Inception-ResNet scales each residual branch by 0.1-0.3 before the sum so
    that very wide residual stacks train stably (Szegedy et al. 2016, section 3.3).

    Example:
        >>> Scale(0.5).forward(np.array([[-1.0, 2.0]]))
        array([[-0.5,  1. ]])
    """

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)
        if not np.isfinite(self.factor):
            raise ConfigError(f"Scale: factor must be a finite number, got {factor!r}")

    def _forward(self, x, training, keep_cache):
        self._cache = True if keep_cache else None
        return x * x.dtype.type(self.factor)

    def _backward(self, dout):
        return dout * dout.dtype.type(self.factor)

    def extra_repr(self):
        return f"factor={self.factor}"
