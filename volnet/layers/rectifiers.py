"""More rectifiers: PReLU (learned negative slope), ELU, and Clip (ReLU6 = Clip(0, 6))."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.activation import Elementwise
from volnet.layers.elementwise import reduce_to


class PReLU(Elementwise):
    """x if x > 0 else a * x, with learned slopes ``weight`` (He et al. 2015).

    Args:
        num_parameters: 1 (one slope shared by all channels) or C (one per channel,
            broadcast along axis 1, as in PyTorch).
        init: Initial slope. Default 0.25.
        weight_shape: Instead of ``num_parameters``: any per-example shape the slopes
            broadcast from NumPy-style, right-aligned (ONNX ``PRelu``'s rule).

    Example:
        >>> PReLU().forward(np.array([[-2.0, 2.0]], dtype=np.float32))
        array([[-0.5,  2. ]], dtype=float32)
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, weight_shape=None,
                 dtype=np.float32) -> None:
        super().__init__()
        if int(num_parameters) != num_parameters or num_parameters < 1:
            raise ConfigError(f"PReLU: num_parameters must be a positive int, got {num_parameters!r}")
        self.num_parameters, self.init = int(num_parameters), float(init)
        self.weight_shape = None if weight_shape is None else tuple(int(d) for d in weight_shape)
        shape = self.weight_shape if self.weight_shape is not None else (self.num_parameters,)
        self.params["weight"] = np.full(shape, self.init, dtype=dtype)
        self.grads["weight"] = np.zeros(shape, dtype=dtype)

    def _slope(self, ndim):
        w = self.params["weight"]
        if self.weight_shape is not None:
            return w
        return w.reshape((1, -1) + (1,) * (ndim - 2)) if ndim >= 2 else w

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.weight_shape is not None:
            ok = len(self.weight_shape) <= len(shape) and all(
                w in (1, d) for w, d in zip(self.weight_shape[::-1], shape[::-1]))
        else:
            ok = self.num_parameters == 1 or (shape and shape[0] == self.num_parameters)
        if not ok:
            slopes = self.weight_shape or (self.num_parameters,)
            raise ShapeError(f"{self.where()}: slopes of shape {slopes} do not fit input {shape}")
        return shape

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        slope = self._slope(x.ndim)
        self._cache = x if keep_cache else None
        return np.where(x > 0, x, x * slope).astype(x.dtype, copy=False)

    def _backward(self, dout):
        x = self._cache
        negative = x <= 0
        slope = self._slope(x.ndim)
        dw = reduce_to(np.where(negative, dout * x, 0.0), np.shape(slope))
        self.grads["weight"] = dw.reshape(self.params["weight"].shape).astype(dout.dtype)
        return np.where(negative, dout * slope, dout).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return (f"weight_shape={self.weight_shape}" if self.weight_shape is not None
                else f"num_parameters={self.num_parameters}")


class ELU(Elementwise):
    """x if x > 0 else alpha * (exp(x) - 1) (Clevert et al. 2016).

    Example:
        >>> ELU().forward(np.array([[0.0, 2.0]]))
        array([[0., 2.]])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def _forward(self, x, training, keep_cache):
        positive = x > 0
        out = np.where(positive, x, self.alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype,
                                                                                copy=False)
        self._cache = (positive, out) if keep_cache else None
        return out

    def _backward(self, dout):
        positive, out = self._cache
        return np.where(positive, dout, dout * (out + self.alpha)).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Clip(Elementwise):
    """min(max(x, min_value), max_value); either bound may be None (ONNX ``Clip``). With
    min_value > max_value every output is max_value (ONNX's and NumPy's rule).

    Example:
        >>> Clip(0.0, 6.0).forward(np.array([[-1.0, 3.0, 7.0]]))
        array([[0., 3., 6.]])
    """

    def __init__(self, min_value: float | None = None, max_value: float | None = None) -> None:
        super().__init__()
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def _forward(self, x, training, keep_cache):
        low = -np.inf if self.min_value is None else self.min_value
        high = np.inf if self.max_value is None else self.max_value
        self._cache = ((x >= low) & (x <= high)) if keep_cache else None
        return np.clip(x, low, high).astype(x.dtype, copy=False)

    def _backward(self, dout):
        return dout * self._cache   # the gradient passes where the input was inside the bounds

    def extra_repr(self):
        return f"min_value={self.min_value}, max_value={self.max_value}"


class ReLU6(Clip):
    """min(max(x, 0), 6), MobileNet's activation.

    Example:
        >>> ReLU6().forward(np.array([[-1.0, 7.0]]))
        array([[0., 6.]])
    """

    def __init__(self) -> None:
        super().__init__(0.0, 6.0)

    def extra_repr(self):
        return ""
