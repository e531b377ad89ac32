"""Narrow: a contiguous slice of one axis (ShuffleNet v2 splits its channels in two)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class Narrow(Layer):
    """``x.narrow(dim, start, length)``: entries ``start .. start + length - 1`` of axis ``dim``
    (counted with the batch axis as 0, as in PyTorch; ``dim`` >= 1). Backward puts the
    gradient back in place and zeros elsewhere.

    Example:
        >>> Narrow(1, 2, 3).output_shape((8, 4, 4))
        (3, 4, 4)
    """

    def __init__(self, dim: int, start: int, length: int) -> None:
        super().__init__()
        self.dim, self.start, self.length = int(dim), int(start), int(length)
        if self.dim < 1 or self.start < 0 or self.length < 1:
            raise ConfigError(f"Narrow: needs dim >= 1 (not the batch axis), start >= 0 and "
                              f"length >= 1, got dim={dim}, start={start}, length={length}")

    def output_shape(self, input_shape):
        shape = list(input_shape)
        if len(shape) < self.dim or self.start + self.length > shape[self.dim - 1]:
            raise ShapeError(f"{self.where()}: input {tuple(input_shape)} has no entries "
                             f"{self.start}..{self.start + self.length - 1} on axis {self.dim}")
        shape[self.dim - 1] = self.length
        return tuple(shape)

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        index = [slice(None)] * x.ndim
        index[self.dim] = slice(self.start, self.start + self.length)
        return np.ascontiguousarray(x[tuple(index)])

    def _backward(self, dout):
        dx = np.zeros(self._cache, dtype=dout.dtype)
        index = [slice(None)] * dx.ndim
        index[self.dim] = slice(self.start, self.start + self.length)
        dx[tuple(index)] = dout
        return dx

    def extra_repr(self):
        return f"dim={self.dim}, start={self.start}, length={self.length}"
