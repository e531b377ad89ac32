"""MatMul: the batched matrix product of two computed tensors, as ONNX's ``MatMul`` of two
graph values (attention scores, bilinear pooling): (N, ..., M, K) @ (N, ..., K, P)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.layers.elementwise import reduce_to
from volnet.layers.multi_input import MultiInputLayer


class MatMul(MultiInputLayer):
    """``a @ b`` per example over the last two axes; the axes before them broadcast NumPy's
    way (right-aligned, size 1 stretches). Both inputs keep the batch axis.

    Example:
        >>> MatMul().output_shape(((2, 3, 4), (1, 4, 5)))
        (2, 3, 5)
    """

    def output_shape(self, input_shapes):
        a, b = (tuple(int(d) for d in s) for s in input_shapes)
        if len(a) < 2 or len(b) < 2 or len(a) != len(b) or a[-1] != b[-2]:
            raise ShapeError(f"{self.where()}: (N, {', '.join(map(str, a))}) @ "
                             f"(N, {', '.join(map(str, b))}) is not a product of matrices of the "
                             "same rank whose inner sizes agree")
        try:
            from volnet.layers.elementwise import broadcast_shapes

            lead = broadcast_shapes(a[:-2], b[:-2])
        except ValueError:
            raise ShapeError(f"{self.where()}: leading axes {a[:-2]} and {b[:-2]} do not "
                             "broadcast") from None
        return tuple(lead) + (a[-2], b[-1])

    def _forward(self, xs, training, keep_cache):
        a, b = xs
        self._cache = (a, b) if keep_cache else None
        return np.matmul(a, b)

    def _backward(self, dout):
        a, b = self._cache
        da = np.matmul(dout, np.swapaxes(b, -1, -2))     # d(a b)/da = dout b^T
        db = np.matmul(np.swapaxes(a, -1, -2), dout)     # d(a b)/db = a^T dout
        return (reduce_to(da, a.shape).astype(dout.dtype, copy=False),
                reduce_to(db, b.shape).astype(dout.dtype, copy=False))
