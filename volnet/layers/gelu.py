"""Erf and GELU (ConvNeXt's activation): x * Phi(x), exactly through the error function or
by PyTorch's tanh approximation."""

from __future__ import annotations

import math

import numpy as np

from volnet.errors import ConfigError
from volnet.layers.base import Layer

_COMPILED: list = []      # the numba ufunc, made on first use: importing numba costs 0.25 s


def _erf_scalar(x):
    return math.erf(x)


def erf(x: np.ndarray) -> np.ndarray:
    """math.erf elementwise (NumPy has no erf, and volnet does not depend on SciPy).

    The compiled kernels run a numba ufunc made on first use (through the runtime's
    numba handle, so its cache lives in the per-user cache directory); the NumPy
    reference path, and calls too small to pay for loading numba, apply ``math.erf``.
    """
    from volnet.runtime import backend

    numba = backend.numba_module() if backend.compiled(x.size) else None
    if numba is None:
        return np.vectorize(math.erf, otypes=[x.dtype])(x)
    if not _COMPILED:
        _COMPILED.append(numba.vectorize(cache=True)(_erf_scalar))
    return _COMPILED[0](x)


class Erf(Layer):
    """The error function, elementwise (ONNX ``Erf``); backward 2/sqrt(pi) exp(-x^2).

    Example:
        >>> Erf().forward(np.array([[0.0, 1.0]]))
        array([[0.        , 0.84270079]])
    """

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        self._cache = x if keep_cache else None
        return erf(x).astype(x.dtype, copy=False)

    def _backward(self, dout):
        x = self._cache
        return (dout * (2 / math.sqrt(math.pi)) * np.exp(-x * x)).astype(dout.dtype, copy=False)


class GELU(Layer):
    """x * Phi(x), Phi the standard normal CDF (``approximate="none"``) or PyTorch's
    ``0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (``"tanh"``); ONNX ``Gelu`` (opset 20).

    Example:
        >>> GELU().forward(np.array([[0.0, 1.0]]))
        array([[0.        , 0.84134475]])
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        self._cache = x if keep_cache else None
        if self.approximate == "tanh":
            t = np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
            return (0.5 * x * (1 + t)).astype(x.dtype, copy=False)
        return (0.5 * x * (1 + erf(x / x.dtype.type(math.sqrt(2))))).astype(x.dtype, copy=False)

    def _backward(self, dout):
        x = self._cache
        if self.approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            t = np.tanh(k * (x + 0.044715 * x ** 3))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
        else:     # Phi(x) + x phi(x)
            slope = 0.5 * (1 + erf(x / x.dtype.type(math.sqrt(2)))) \
                + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return (dout * slope).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"
