"""Power: x ** p for a fixed exponent (ONNX Pow with a constant exponent, Sqrt = p 0.5,
Reciprocal = p -1), as ConvNeXt's spelled-out layer norm and the opset-11 exports use them."""

from __future__ import annotations

import numpy as np

from volnet.layers.base import Layer


class Power(Layer):
    """Elementwise ``x ** exponent``; backward ``exponent * x ** (exponent - 1)``.

    Example:
        >>> Power(0.5).forward(np.array([[4.0, 9.0]]))
        array([[2., 3.]])
    """

    def __init__(self, exponent: float) -> None:
        super().__init__()
        self.exponent = float(exponent)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        p = self.exponent
        if p == 2.0:
            out = x * x
        elif p == 0.5:
            out = np.sqrt(x)
        elif p == -1.0:
            out = 1.0 / x
        else:
            out = np.power(x, x.dtype.type(p))
        self._cache = (x, out) if keep_cache else None
        return out.astype(x.dtype, copy=False)

    def _backward(self, dout):
        x, out = self._cache
        p = self.exponent
        if p == 0.5:
            slope = 0.5 / out
        elif p == -1.0:
            slope = -out * out
        else:
            slope = p * np.power(x, p - 1.0)
        return (dout * slope).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"{self.exponent:g}"
