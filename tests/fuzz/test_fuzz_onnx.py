"""Fuzz suite of the ONNX reader: mutated files load (and their shapes agree) or raise a
VolnetError, and tracemalloc's peak stays under the memory budget (see harness.py)."""

import os
import tempfile
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import volnet as vn
from volnet import layers as L
from volnet.io import load_onnx
from volnet.io.onnx.export import to_onnx_model

from .harness import BUDGET, INTERESTING, byte_mutations, run_fuzz

pytestmark = pytest.mark.fuzz


def _exported() -> bytes:
    """A volnet net with a squeeze-excitation gate, LayerNorm and Resize, as exported."""
    layers = {"conv": vn.Conv2d(3, 4, 3, padding=1, rng=0), "pool": vn.GlobalAvgPool2d(),
              "gate": L.HardSigmoid(), "scale": L.BinaryOp("mul"),
              "up": vn.Upsample(scale_factor=2), "norm": L.LayerNorm(8)}
    nodes = [L.Node("layer", "conv", ("x",), "f"), L.Node("layer", "pool", ("f",), "p"),
             L.Node("layer", "gate", ("p",), "g"), L.Node("layer", "scale", ("f", "g"), "s"),
             L.Node("layer", "up", ("s",), "u"), L.Node("layer", "norm", ("u",), "y")]
    return to_onnx_model(L.Graph(layers, nodes, "x", "y"), (3, 4, 4)).SerializeToString()


def _folded() -> bytes:
    """PyTorch-style shape arithmetic and constants that fold: Shape, Gather, Concat,
    ConstantOfShape, broadcast Mul, a Dropout with its mask, then Reshape and Pad."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("ConstantOfShape", ["cshape"], ["ones"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("Mul", ["ones", "col"], ["c"]),
             helper.make_node("Add", ["x", "c"], ["a"]),
             helper.make_node("Dropout", ["a"], ["d", "mask"]),
             helper.make_node("Pad", ["d", "pads"], ["p"]),
             helper.make_node("Reshape", ["p", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64), "cshape": np.array([1, 4, 4], np.int64),
             "col": np.ones((1, 1, 4), np.float32), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1],
                                                                    np.int64)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 72])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


SEEDS = [_exported(), _folded()]


@st.composite
def tensor_edits(draw):
    """An initializer's values or dims, or the input's dims, replaced by interesting sizes."""
    model = onnx.ModelProto.FromString(SEEDS[draw(st.integers(0, len(SEEDS) - 1))])
    graph = model.graph
    kind = draw(st.sampled_from(["values", "dims", "input"]))
    big = st.sampled_from(INTERESTING + [-1, -(2 ** 31)])
    if kind == "input":
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(big) % (2 ** 63)
    else:
        tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
        array = numpy_helper.to_array(tensor)
        if kind == "values" and array.size:
            flat = array.reshape(-1).copy()
            flat[draw(st.integers(0, flat.size - 1))] = np.clip(
                draw(big), np.iinfo(np.int64).min, np.iinfo(np.int64).max) \
                if flat.dtype.kind == "i" else float(draw(big))
            tensor.CopyFrom(numpy_helper.from_array(flat.reshape(array.shape), tensor.name))
        elif tensor.dims:
            tensor.dims[draw(st.integers(0, len(tensor.dims) - 1))] = draw(big) % (2 ** 62)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="volnet-fuzz-onnx-") as folder:
        yield os.path.join(folder, "m.onnx")


def test_fuzz_onnx(request, scratch):
    strategy = st.one_of(byte_mutations(SEEDS[0]), byte_mutations(SEEDS[1]), tensor_edits())

    def load(blob):
        with open(scratch, "wb") as f:
            f.write(blob)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net = load_onnx(scratch, max_bytes=BUDGET)
        out = net.output_shape(net.input_shape)
        assert all(isinstance(d, int) and d >= 0 for d in out)

    run_fuzz(request, "onnx", strategy, load)
