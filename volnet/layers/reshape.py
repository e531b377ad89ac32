"""Flatten (volumes to vectors, between the CONV/POOL stack and FC layers) and Reshape
(any per-example shape, as ONNX's ``Reshape`` gives it)."""

from __future__ import annotations

import math

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's order, so weights port).

    Example:
        >>> Flatten().output_shape((12, 16, 16))
        (3072,)
    """

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)   # a Python int: no int64 wrap on huge shapes

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        # an explicit width, not -1: reshape cannot infer -1 for an empty batch (N=0)
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))

    def _backward(self, dout):
        return dout.reshape(self._cache)


class Reshape(Layer):
    """Reshape each example to ``shape`` (one entry may be -1); ONNX ``Reshape``.

    Example:
        >>> Reshape((-1,)).output_shape((4, 2, 2))
        (16,)
    """

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        if sum(d == -1 for d in self.shape) > 1 or any(d < -1 or d == 0 for d in self.shape):
            raise ConfigError(f"Reshape: shape {self.shape} needs positive sizes and at most one -1")

    def output_shape(self, input_shape):
        size = math.prod(input_shape)
        known = math.prod(d for d in self.shape if d != -1)
        if (-1 in self.shape and size % known) or (-1 not in self.shape and size != known):
            raise ShapeError(f"{self.where()}: cannot reshape {tuple(input_shape)} to {self.shape}")
        return tuple(size // known if d == -1 else d for d in self.shape)

    def _forward(self, x, training, keep_cache):
        shape = self.output_shape(x.shape[1:])
        self._cache = x.shape if keep_cache else None
        return x.reshape((x.shape[0],) + shape)

    def _backward(self, dout):
        return dout.reshape(self._cache)

    def extra_repr(self):
        return f"{self.shape}"
