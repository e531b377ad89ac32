"""The ONNX reader's memory budget: what a tiny file declares is checked before it is
allocated (initializers, folded constants, per-example shapes), absurd sizes are refused
naming the node, and damaged external data is a CheckpointError, never a raw traceback."""

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from volnet.errors import BudgetError, CheckpointError, ConfigError
from volnet.io import load_onnx

MiB = 1 << 20


def _model(nodes, shape=(3, 4, 4), inits=(), opset=13, dims=None):
    dims = dims if dims is not None else ["N", *shape]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [out], initializer=inits),
                             opset_imports=[helper.make_opsetid("", opset)])


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_constant_of_shape_of_40000_squared_is_refused_before_allocating(tmp_path):
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"], name="huge"),
             helper.make_node("Add", ["x", "c"], ["y"])]
    path = tmp_path / "c.onnx"
    onnx.save(_model(nodes, (40000,), {"s": np.array([40000, 40000], np.int64)}), path)
    assert path.stat().st_size < 400

    def load():
        with pytest.raises(BudgetError, match=r"folding node 'huge' \(ConstantOfShape\) would "
                                              r"need 6\.0 GiB"):
            load_onnx(path)
    assert _peak(load) < 32 * MiB


def test_broadcast_of_two_constants_is_counted_before_folding():
    nodes = [helper.make_node("Mul", ["a", "b"], ["c"], name="outer"),
             helper.make_node("Add", ["x", "c"], ["y"])]
    model = _model(nodes, (1,), {"a": np.ones((100000, 1), np.float32),
                                             "b": np.ones((1, 100000), np.float32)})
    with pytest.raises(BudgetError, match=r"'outer' \(Mul\) would need 37\.3 GiB"):
        load_onnx(model)


def test_constant_of_shape_and_concat_chain_is_counted_in_total():
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["a"], name="a"),
             helper.make_node("Concat", ["a", "a"], ["b"], name="twice", axis=0),
             helper.make_node("Concat", ["b", "b"], ["c"], name="four", axis=0),
             helper.make_node("Add", ["x", "c"], ["y"])]
    model = _model(nodes, (4,), {"s": np.array([60000, 4], np.int64)})
    with pytest.raises(BudgetError, match=r"'four' \(Concat\) would need"):
        load_onnx(model, max_bytes="4M")


def test_initializers_are_counted_from_their_declared_dims():
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = _model(nodes, inits={"w": np.zeros((64, 3, 3, 3), np.float32)})
    load_onnx(model, max_bytes="1M")
    with pytest.raises(BudgetError, match=r"initializer 'w' of shape \[64, 3, 3, 3\]"):
        load_onnx(model, max_bytes="4K")


def test_damaged_external_data_is_a_checkpoint_error(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    model = _model(nodes, inits={"w": np.ones((4, 3, 3, 3), np.float32)})
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    (tmp_path / "m.data").write_bytes(b"\x00" * 7)          # shorter than the tensor
    with pytest.raises(CheckpointError, match=r"initializer 'w' cannot be read"):
        load_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("nodes, inits, match", [
    ([helper.make_node("Pad", ["x", "p"], ["y"], name="pad")],
     {"p": np.array([0, 0, 0, 2 ** 30, 0, 0, 0, 0], np.int64)},
     r"'pad' \(Pad\), its output would have shape \(N, 3, 4, 1073741828\); an axis of 2\^30"),
    ([helper.make_node("Resize", ["x", "", "s"], ["y"], name="up", mode="nearest")],
     {"s": np.array([1, 1, 1e9, 1e9], np.float32)}, r"'up' \(Resize\), its output would have"),
    ([helper.make_node("Resize", ["x", "", "s"], ["y"], name="mid", mode="nearest")],
     {"s": np.array([1, 1, 512, 512], np.float32)},
     r"one example's output of node 'mid' \(Resize\), shape \(3, 2048, 2048\) would need"),
])
def test_absurd_shapes_are_refused_naming_the_node(nodes, inits, match):
    with pytest.raises((ConfigError, BudgetError), match=match):
        load_onnx(_model(nodes, inits=inits), max_bytes="16M")


def test_absurd_input_dims_are_refused():
    node = helper.make_node("Relu", ["x"], ["y"])
    with pytest.raises(ConfigError, match=r"graph input 'x' has per-example shape \[3, "
                                          r"1073741824, 4\]; every axis must be between 1"):
        load_onnx(_model([node], dims=["N", 3, 2 ** 30, 4]))


def test_a_deep_chain_imports_and_runs():
    """Import time is linear in depth (names are handed out from a set): 3,000 nodes."""
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}"], name=f"r{i}")
             for i in range(2999)] + [helper.make_node("Relu", ["t2999"], ["y"], name="last")]
    net = load_onnx(_model(nodes, (5,)))
    assert len(net.nodes) == 3000
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(net.forward(x), np.maximum(x, 0))
