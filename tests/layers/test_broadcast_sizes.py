"""Shape inference of broadcasting layers on huge declared shapes: a valid broadcast whose
element count passes int64 is still a broadcast (np.broadcast_shapes called it "do not
broadcast": `volnet summary m.onnx --input 1x2000000000x2000000000` on an SE block)."""

import pytest

from volnet.errors import ShapeError
from volnet.layers.binary_op import BinaryOp
from volnet.layers.elementwise import broadcast_shapes
from volnet.layers.expand import Expand
from volnet.layers.matmul import MatMul

BIG = 2_000_000_000


def test_gate_broadcast_of_a_huge_map():
    assert BinaryOp("mul").output_shape([(8, BIG, BIG), (8, 1, 1)]) == (8, BIG, BIG)


def test_expand_and_matmul_of_huge_shapes():
    assert Expand((8, BIG, BIG)).output_shape((8, 1, 1)) == (8, BIG, BIG)
    assert MatMul().output_shape([(BIG, BIG, 4, 5), (1, 1, 5, 6)]) == (BIG, BIG, 4, 6)


def test_real_mismatches_still_refused():
    with pytest.raises(ShapeError):
        BinaryOp("add").output_shape([(8, 3, 3), (4, 1, 1)])
    with pytest.raises(ValueError):
        broadcast_shapes((0,), (5,))
    assert broadcast_shapes((1, 0), (3, 1)) == (3, 0)
