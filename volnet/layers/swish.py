"""Gated activations of mobile networks: SiLU (Swish, x * sigmoid(x)), HardSigmoid and
HardSwish (MobileNet v3's piecewise-linear stand-ins). Each backward sits beside its forward."""

from __future__ import annotations

import numpy as np

from volnet.layers.base import Layer


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


class SiLU(Layer):
    """x * sigmoid(x) (Swish; EfficientNet's activation); ONNX writes it as Sigmoid then Mul.

    Example:
        >>> SiLU().forward(np.array([[0.0, 2.0]]))
        array([[0.        , 1.76159416]])
    """

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        s = _sigmoid(x)
        self._cache = (x, s) if keep_cache else None
        return x * s

    def _backward(self, dout):
        x, s = self._cache
        return dout * s * (1.0 + x * (1.0 - s))     # d(x s)/dx = s + x s (1 - s)


class HardSigmoid(Layer):
    """max(0, min(1, alpha * x + beta)); ONNX's defaults alpha=0.2, beta=0.5, PyTorch's
    ``nn.Hardsigmoid`` is alpha=1/6.

    Example:
        >>> HardSigmoid(1 / 6).forward(np.array([[-4.0, 0.0, 1.5, 4.0]]))
        array([[0.  , 0.5 , 0.75, 1.  ]])
    """

    def __init__(self, alpha: float = 0.2, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        z = x * x.dtype.type(self.alpha) + x.dtype.type(self.beta)
        self._cache = ((z > 0) & (z < 1)) if keep_cache else None
        return np.clip(z, 0, 1).astype(x.dtype, copy=False)

    def _backward(self, dout):
        return np.where(self._cache, dout * self.alpha, 0).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"alpha={self.alpha:g}, beta={self.beta:g}"


class HardSwish(Layer):
    """x * HardSigmoid(1/6, 1/2)(x): 0 below -3, x above 3 (MobileNet v3; ONNX HardSwish).

    Example:
        >>> HardSwish().forward(np.array([[-4.0, 0.0, 1.5, 4.0]]))
        array([[-0.   ,  0.   ,  1.125,  4.   ]])
    """

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        gate = np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)
        self._cache = x if keep_cache else None
        return x * gate

    def _backward(self, dout):
        x = self._cache
        # gate + x * gate' : 0 below -3, 1 above 3, x / 3 + 1/2 between (PyTorch's formula)
        slope = np.where(x < -3, 0.0, np.where(x > 3, 1.0, x / 3 + 0.5))
        return (dout * slope).astype(dout.dtype, copy=False)
