"""BinaryOp: Add, Sub, Mul, Div, Max, Min of two computed tensors with ONNX broadcasting.

The per-example shapes broadcast NumPy's way (right-aligned; a size-1 axis stretches), as
squeeze-and-excitation gates ``(N, C, 1, 1) * (N, C, H, W)`` need; the batch axis is shared,
never broadcast. Backward sums the gradient over the axes an input was stretched along.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.elementwise import broadcast_shapes, reduce_to
from volnet.layers.multi_input import MultiInputLayer

OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
       "max": np.maximum, "min": np.minimum}


class BinaryOp(MultiInputLayer):
    """``a <op> b`` for two computed tensors of broadcast-compatible per-example shapes.

    Args:
        op: ``"add"``, ``"sub"``, ``"mul"``, ``"div"``, ``"max"`` or ``"min"``. Where ``max``
            or ``min`` ties, each input gets half the gradient (PyTorch's rule).

    Example:
        >>> gate = BinaryOp("mul")
        >>> gate.output_shape(((4, 1, 1), (4, 5, 5)))
        (4, 5, 5)
        >>> gate.forward((np.full((1, 2, 1, 1), 2.0), np.ones((1, 2, 1, 3))))[0, :, 0]
        array([[2., 2., 2.],
               [2., 2., 2.]])
    """

    def __init__(self, op: str) -> None:
        super().__init__()
        if op not in OPS:
            raise ConfigError(f"BinaryOp: op must be one of {sorted(OPS)}, got {op!r}")
        self.op = op

    def output_shape(self, input_shapes):
        a, b = (tuple(int(d) for d in s) for s in input_shapes)
        if len(a) != len(b):
            raise ShapeError(f"{self.where()}: inputs (N, {', '.join(map(str, a))}) and "
                             f"(N, {', '.join(map(str, b))}) differ in rank; the batch axis would "
                             "meet another axis (reshape one to the other's rank first)")
        try:
            return broadcast_shapes(a, b)
        except ValueError:
            raise ShapeError(f"{self.where()}: per-example shapes {a} and {b} do not broadcast "
                             "(each axis must agree or be 1 in one of them)") from None

    def _forward(self, xs, training, keep_cache):
        a, b = xs
        self._cache = (a, b) if keep_cache else None
        return OPS[self.op](a, b)

    def _backward(self, dout):
        a, b = self._cache
        if self.op == "add":
            da, db = dout, dout
        elif self.op == "sub":
            da, db = dout, -dout
        elif self.op == "mul":
            da, db = dout * b, dout * a
        elif self.op == "div":
            da = dout / b
            db = -da * a / b                    # d(a / b)/db = -a / b^2
        else:
            wins = (a > b) if self.op == "max" else (a < b)
            share = np.where(a == b, 0.5, wins.astype(dout.dtype))
            da, db = dout * share, dout * (1 - share)
        return (reduce_to(da, a.shape).astype(dout.dtype, copy=False),
                reduce_to(db, b.shape).astype(dout.dtype, copy=False))

    def extra_repr(self):
        return repr(self.op)
