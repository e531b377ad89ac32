"""Expand: broadcast each example to a larger shape (ONNX ``Expand``), e.g. a (C, 1, 1) gate
to (C, H, W) or a (1, H, W) map to (C, H, W); backward sums over the stretched axes."""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.layers.base import Layer
from volnet.layers.elementwise import reduce_to


class Expand(Layer):
    """Broadcast the per-example input to ``shape`` by NumPy's rules (size-1 axes stretch).

    Example:
        >>> Expand((3, 2, 2)).output_shape((3, 1, 1))
        (3, 2, 2)
    """

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != len(self.shape) or any(a != b and a != 1 for a, b in zip(shape, self.shape)):
            raise ShapeError(f"{self.where()}: per-example shape {shape} does not broadcast to "
                             f"{self.shape} (same rank, each axis equal or 1)")
        from volnet.layers.elementwise import broadcast_shapes

        return broadcast_shapes(shape, self.shape)

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        return np.ascontiguousarray(np.broadcast_to(x, (x.shape[0],) + self.output_shape(x.shape[1:])))

    def _backward(self, dout):
        return np.ascontiguousarray(reduce_to(dout, self._cache))

    def extra_repr(self):
        return f"{self.shape}"
