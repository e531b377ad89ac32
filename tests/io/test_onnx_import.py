"""The importer on hand-written graphs: the three bugs the conformance suite found, padding
modes, per-opset rules, batch handling, refusals, and preprocessing metadata."""

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import volnet as vn
from volnet.errors import ConfigError
from volnet.io import export_onnx, load_onnx


def graph(nodes, shape, out_shape=None, inits=(), opset=13, batch=1):
    """A one-input model: input "x" of shape (batch, *shape), output "y"."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()]

    def build(out):
        return helper.make_model(helper.make_graph(nodes, "g", inputs, [out], initializer=inits),
                                 opset_imports=[helper.make_opsetid("", opset)])
    if out_shape is None:   # let ONNX's shape inference give the output's shape
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
        inferred = onnx.shape_inference.infer_shapes(build(out))
        out = next((v for v in inferred.graph.value_info if v.name == "y"), out)
    else:
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    return build(out)


def compare(model, shape, batch=1, rtol=1e-5):
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": x})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_onnx(model)
    got = net.forward(x)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-5 * np.abs(want).max())
    return net


# ---- the three bugs -------------------------------------------------------------------
def test_gemm_with_a_row_bias_imports():
    rng = np.random.default_rng(1)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)
    model = graph([node], (4,), [2, 3], {"w": rng.standard_normal((3, 4)).astype(np.float32),
                                         "b": rng.standard_normal((1, 3)).astype(np.float32)},
                  batch=2)
    compare(model, (4,), batch=2)


def test_dilated_average_pool_is_refused_not_silently_wrong():
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool1", kernel_shape=[2, 2],
                            dilations=[2, 2])
    with pytest.raises(ConfigError, match=r"'pool1' \(AveragePool\), dilations: \[2, 2\]: "
                                          r"dilated pooling is not supported; use dilations"):
        load_onnx(graph([node], (3, 6, 6), opset=19))


@pytest.mark.parametrize("op", ["Add", "Mul", "Sub", "Div"])
def test_vector_constant_broadcasts_along_the_last_axis_as_numpy_does(op):
    """A (C,) constant on (N, C, H, W) runs along W (NumPy), not per channel."""
    c = np.array([0.5, 2.0, -1.0, 3.0], np.float32)         # C = 4 = W on purpose
    node = helper.make_node(op, ["x", "c"], ["y"])
    net = compare(graph([node], (4, 3, 4), inits={"c": c}), (4, 3, 4))
    x = np.ones((1, 4, 3, 4), np.float32)
    want = {"Add": x + c, "Mul": x * c, "Sub": x - c, "Div": x / c}[op]
    np.testing.assert_allclose(net.forward(x), want, rtol=1e-6)


def test_constant_first_operands_and_per_channel_constants():
    c = np.arange(1.0, 4.0, dtype=np.float32).reshape(3, 1, 1)
    nodes = [helper.make_node("Sub", ["c", "x"], ["a"]), helper.make_node("Div", ["c", "a"], ["y"])]
    compare(graph(nodes, (3, 2, 2), inits={"c": c}), (3, 2, 2))


# ---- padding --------------------------------------------------------------------------
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_and_max_pool_auto_pad(auto_pad):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad=auto_pad),
             helper.make_node("MaxPool", ["a"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                              auto_pad=auto_pad)]
    compare(graph(nodes, (3, 8, 7), inits={"w": w}), (3, 8, 7))


def test_caffe_ceil_pool_pads_and_average_pool_excluding_asymmetric_pads():
    nodes = [helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[0, 0, 1, 1]),
             helper.make_node("AveragePool", ["a"], ["y"], kernel_shape=[3, 3], strides=[1, 1],
                              pads=[1, 0, 2, 1], count_include_pad=0)]
    net = compare(graph(nodes, (2, 12, 12)), (2, 12, 12))
    assert any(isinstance(layer, vn.layers.ConstantPad2d) for _, layer in net.named_children())


def test_constant_pad_operator():
    pads = np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64)
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode="constant")
    compare(graph([node], (2, 3, 3), inits={"p": pads, "v": np.array(0.5, np.float32)}), (2, 3, 3))


# ---- opset rules and the batch axis ---------------------------------------------------
def test_opset_11_softmax_normalises_all_axes_after_axis():
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    net = compare(graph([node], (3, 2, 2), opset=11), (3, 2, 2))
    assert net.forward(np.zeros((1, 3, 2, 2), np.float32)).sum() == pytest.approx(1.0)


def test_softmax_over_the_batch_axis_is_refused_not_moved():
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=0)
    with pytest.raises(ConfigError, match=r"'sm' \(Softmax\), axis: axis 0 of input \(N, 3\) "
                                          r"is the batch axis"):
        load_onnx(graph([node], (3,)))


def test_flatten_with_negative_axis_equal_to_one():
    node = helper.make_node("Flatten", ["x"], ["y"], axis=-3)
    compare(graph([node], (2, 3, 4)), (2, 3, 4))


def test_fixed_batch_reshape_reads_as_batch_preserving_and_says_so():
    shape = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(
        np.array([1, -1], np.int64)))
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="flat")
    with pytest.warns(UserWarning, match=r"'flat' \(Reshape\): target \[1, -1\] fixes the batch "
                                         r"to 1; read as keeping the batch axis, \(N, 12\)"):
        net = load_onnx(graph([shape, node], (3, 2, 2)))
    assert net.forward(np.ones((5, 3, 2, 2), np.float32)).shape == (5, 12)


def test_reshape_that_moves_the_batch_is_refused():
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="r")
    with pytest.raises(ConfigError, match=r"'r' \(Reshape\), shape: target \[2, 6\] .* does not "
                                          r"keep the batch axis; .* targets like \[0, \.\.\.\]"):
        load_onnx(graph([node], (3, 2, 2), inits={"s": np.array([2, 6], np.int64)}))


def test_pytorch_style_shape_arithmetic_folds():
    """x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)     # computed from Shape: no note
        net = load_onnx(graph(nodes, (3, 2, 2), inits=inits, batch="N"))
    assert net.forward(np.ones((4, 3, 2, 2), np.float32)).shape == (4, 12)


def test_channel_shuffle_becomes_one_layer():
    def target(*v):
        return np.array(v, np.int64)

    nodes = [helper.make_node("Reshape", ["x", "split"], ["a"]),
             helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["b", "merge"], ["y"])]
    net = compare(graph(nodes, (6, 2, 2), inits={"split": target(0, 3, 2, 2, 2),
                                                 "merge": target(0, 6, 2, 2)}), (6, 2, 2))
    assert [type(layer).__name__ for _, layer in net.named_children()] == ["ChannelShuffle"]
    assert net["channel_shuffle"].groups == 3


@pytest.mark.parametrize("opset, clip", [(9, {"min": 0.0, "max": 6.0}), (13, None)])
def test_clip_to_0_6_is_relu6(opset, clip):
    inputs = ["x"] if clip else ["x", "lo", "hi"]
    node = helper.make_node("Clip", inputs, ["y"], **(clip or {}))
    inits = {} if clip else {"lo": np.array(0, np.float32), "hi": np.array(6, np.float32)}
    net = compare(graph([node], (3, 2, 2), inits=inits, opset=opset), (3, 2, 2))
    assert isinstance(next(layer for _, layer in net.named_children()), vn.layers.ReLU6)


def test_refusals_name_node_operator_attribute_and_fix():
    concat = helper.make_node("Concat", ["x", "c"], ["y"], name="cat", axis=1)
    with pytest.raises(ConfigError, match=r"'cat' \(Concat\), inputs: it joins a computed tensor "
                                          r"with a constant; volnet concatenates"):
        load_onnx(graph([concat], (3, 2), inits={"c": np.ones((1, 2, 2), np.float32)}))
    with pytest.raises(ConfigError, match=r"opset 6; volnet imports opsets 7 to 28"):
        load_onnx(graph([helper.make_node("Relu", ["x"], ["y"])], (3,), opset=6))
    mode = helper.make_node("Pad", ["x", "p"], ["y"], name="pad", mode="reflect")
    with pytest.raises(ConfigError, match=r"'pad' \(Pad\), mode: 'reflect' padding is not "
                                          r"supported; volnet imports constant padding"):
        load_onnx(graph([mode], (1, 3, 3), inits={"p": np.zeros(8, np.int64)}))


# ---- preprocessing travels ------------------------------------------------------------
def test_export_records_preprocessing_and_import_reads_it_back(tmp_path):
    net = vn.models.lenet5()
    prep = {"mean": [0.1307], "std": [0.3081], "class_names": [str(i) for i in range(10)]}
    old = os.umask(0o022)
    try:
        path = export_onnx(net, tmp_path / "lenet.onnx", (1, 28, 28), preprocessing=prep)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644          # a normal file, not 0600
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["volnet.mean"] == "[0.1307]" and props["volnet.input_shape"] == "[1, 28, 28]"
    assert "pixels / 255" in props["volnet.preprocessing"]
    back = load_onnx(path)
    assert back.preprocessing == {"input_shape": [1, 28, 28], **prep}
    again = export_onnx(back, tmp_path / "again.onnx", (1, 28, 28))  # net.preprocessing is used
    assert load_onnx(again).preprocessing == back.preprocessing


def test_imported_weights_are_the_files_and_later_layers_draw_again(tmp_path):
    # the importer builds its layers without drawing initial weights (init.shapes_only):
    # every parameter and buffer must still be the file's, bit for bit, and a layer built
    # after the import (or after a refused import) draws random weights again
    rng = np.random.default_rng(3)
    net = vn.Sequential(vn.Conv2d(3, 8, 3, padding=1, rng=rng), vn.BatchNorm2d(8), vn.ReLU(),
                        vn.Conv2d(8, 4, 1, bias=False, rng=rng), vn.Flatten(),
                        vn.Linear(4 * 6 * 6, 5, rng=rng))
    net[1].buffers["running_mean"][...] = rng.standard_normal(8)
    net[1].buffers["running_var"][...] = rng.uniform(0.5, 2, 8)
    net[1].params["weight"][...] = rng.uniform(0.5, 2, 8)
    net[1].params["bias"][...] = rng.standard_normal(8)
    net[0].params["bias"][...] = rng.standard_normal(8)
    export_onnx(net, tmp_path / "n.onnx", input_shape=(3, 6, 6))
    loaded = load_onnx(tmp_path / "n.onnx")
    want = net.state_dict()
    got = loaded.state_dict()
    assert sorted(map(np.ndarray.tobytes, map(np.asarray, got.values()))) == sorted(
        map(np.ndarray.tobytes, map(np.asarray, want.values())))
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(x), net.forward(x), rtol=1e-5, atol=1e-6)
    assert np.abs(vn.Conv2d(3, 8, 3).params["weight"]).min() > 0
    with pytest.raises(ConfigError):
        load_onnx(graph([helper.make_node("Softmax", ["x"], ["y"], axis=0)], (4,)))
    assert np.abs(vn.Linear(64, 8).params["weight"]).min() > 0
