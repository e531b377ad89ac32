"""Transpose: permute the axes of each example (the batch axis stays first)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class Transpose(Layer):
    """Reorder per-example axes: ``dims`` is a permutation of 0..rank-1 over (C, H, W, ...).

    Example:
        >>> Transpose((1, 0, 2)).output_shape((2, 3, 4))
        (3, 2, 4)
    """

    def __init__(self, dims) -> None:
        super().__init__()
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(len(self.dims))):
            raise ConfigError(f"Transpose: dims must be a permutation of 0..{len(self.dims) - 1}, "
                              f"got {self.dims}")

    def output_shape(self, input_shape):
        if len(input_shape) != len(self.dims):
            raise ShapeError(f"{self.where()} expects {len(self.dims)} axes per example, got "
                             f"input {tuple(input_shape)}")
        return tuple(input_shape[d] for d in self.dims)

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        self._cache = True if keep_cache else None
        return np.ascontiguousarray(x.transpose((0,) + tuple(d + 1 for d in self.dims)))

    def _backward(self, dout):
        inverse = np.argsort((0,) + tuple(d + 1 for d in self.dims))
        return np.ascontiguousarray(dout.transpose(inverse))

    def extra_repr(self):
        return f"dims={self.dims}"
