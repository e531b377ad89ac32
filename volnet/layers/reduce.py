"""Reduce: the sum, mean or maximum of each example over some of its axes (ONNX ReduceSum,
ReduceMean, ReduceMax), keeping the reduced axes as size 1 or dropping them."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer

OPS = ("sum", "mean", "max")


class Reduce(Layer):
    """``x.<op>(axis=axes, keepdims=keepdims)`` over non-batch axes.

    Args:
        op: ``"sum"``, ``"mean"`` or ``"max"`` (ties in max share the gradient equally).
        axes: Axes of the whole (N, ...) tensor, each >= 1 (negative counts from the end).
        keepdims: Keep each reduced axis with size 1.

    Example:
        >>> Reduce("mean", (1,)).output_shape((4, 3, 3))
        (1, 3, 3)
    """

    def __init__(self, op: str, axes, keepdims: bool = True) -> None:
        super().__init__()
        if op not in OPS:
            raise ConfigError(f"Reduce: op must be one of {OPS}, got {op!r}")
        self.op, self.keepdims = op, bool(keepdims)
        self.axes = tuple(int(a) for a in axes)
        if not self.axes or 0 in self.axes or len(set(self.axes)) != len(self.axes):
            raise ConfigError(f"Reduce: axes {self.axes} must be distinct non-batch axes (>= 1 "
                              "or negative)")

    def _resolved(self, rank: int) -> tuple[int, ...]:
        axes = tuple(sorted(a + rank if a < 0 else a for a in self.axes))
        if any(not 0 < a < rank for a in axes) or len(set(axes)) != len(axes):
            raise ShapeError(f"{self.where()}: axes {self.axes} are not distinct non-batch axes "
                             f"of a rank-{rank} input")
        return axes

    def output_shape(self, input_shape):
        axes = self._resolved(len(input_shape) + 1)
        shape = [1 if i + 1 in axes else d for i, d in enumerate(input_shape)]
        return tuple(shape if self.keepdims else [d for i, d in enumerate(shape) if i + 1 not in axes])

    def _check_input(self, x):
        self._resolved(x.ndim)

    def _forward(self, x, training, keep_cache):
        axes = self._resolved(x.ndim)
        out = getattr(np, self.op)(x, axis=axes, keepdims=True)
        self._cache = (x, out, axes) if keep_cache else None
        return out if self.keepdims else out.reshape((x.shape[0],) + self.output_shape(x.shape[1:]))

    def _backward(self, dout):
        x, out, axes = self._cache
        g = dout.reshape(out.shape)
        if self.op == "sum":
            dx = np.broadcast_to(g, x.shape)
        elif self.op == "mean":
            dx = np.broadcast_to(g / int(np.prod([x.shape[a] for a in axes])), x.shape)
        else:
            winners = (x == out).astype(dout.dtype)
            dx = g * winners / winners.sum(axis=axes, keepdims=True)
        return np.ascontiguousarray(dx, dtype=dout.dtype)

    def extra_repr(self):
        return f"{self.op!r}, axes={self.axes}" + ("" if self.keepdims else ", keepdims=False")
