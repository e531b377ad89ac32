"""MultiInputLayer: a layer over several tensors, as a Graph node with several inputs runs it.

``forward((a, b), training)`` returns one array; ``backward(dout)`` returns one gradient per
input, in order; ``output_shape((shape_a, shape_b))`` takes one per-example shape per input.
Everything else (caching, dtype handling, hooks, ``accumulate``) is :class:`Layer`'s: the
inputs travel through it as one tuple.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.layers.base import Layer


class MultiInputLayer(Layer):
    """Base of the layers that combine ``arity`` computed tensors (all with the same batch)."""

    arity = 2

    def _validate(self, xs, outermost: bool):
        if not isinstance(xs, (tuple, list)) or len(xs) != self.arity:
            raise ShapeError(f"{self.where()} takes a tuple of {self.arity} arrays, got "
                             f"{type(xs).__name__}" + (f" of {len(xs)}" if isinstance(xs, (tuple, list))
                                                       else ""))
        xs = tuple(Layer._validate(self, x, outermost) for x in xs)
        dtype = np.result_type(*xs)
        xs = tuple(x.astype(dtype, copy=False) for x in xs)
        if len({x.shape[0] for x in xs}) != 1 or min(x.ndim for x in xs) < 1:
            raise ShapeError(f"{self.where()}: inputs of shapes {[x.shape for x in xs]} do not "
                             "share one batch axis")
        self.output_shape(tuple(x.shape[1:] for x in xs))
        return xs

    def _check_input(self, x):
        """Each input alone is fine; :meth:`output_shape` checks them together."""
