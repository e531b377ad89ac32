"""The operators of today's CNN families through ONNX: each new layer exported at every opset
that spells it differently (equal to onnxruntime, imported back), PyTorch exports of the
blocks that use them (SiLU, HardSwish, squeeze-excitation, GELU, LayerNorm, split attention)
equal to PyTorch, the Dropout mask of Caffe2's opset-9 files, and fixed-batch exports."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import volnet as vn
from volnet import layers as L
from volnet.errors import ConfigError
from volnet.io import export_onnx, load_onnx

NEW_LAYERS = [   # (factory, per-example shape, input kind)
    (lambda: L.SiLU(), (3, 4, 4), "normal"),
    (lambda: L.HardSigmoid(), (3, 4), "normal"),
    (lambda: L.HardSwish(), (3, 4, 4), "wide"),
    (lambda: L.Erf(), (6,), "normal"),
    (lambda: L.GELU(), (3, 4), "normal"),
    (lambda: L.GELU("tanh"), (3, 4), "normal"),
    (lambda: L.LayerNorm(4), (3, 2, 4), "normal"),
    (lambda: L.LayerNorm((2, 4)), (3, 2, 4), "normal"),
    (lambda: L.Reduce("mean", (1,)), (4, 3, 3), "normal"),
    (lambda: L.Reduce("sum", (2, 3), keepdims=False), (4, 3, 3), "normal"),
    (lambda: L.Reduce("max", (-1,)), (4, 3, 5), "normal"),
    (lambda: L.Power(2), (3, 4), "normal"),
    (lambda: L.Power(0.5), (3, 4), "positive"),
    (lambda: L.Power(-1), (3, 4), "positive"),
    (lambda: L.Expand((3, 4, 5)), (3, 1, 5), "normal"),
    (lambda: L.BatchedLinear(4, 6, rng=0), (3, 5, 4), "normal"),
    (lambda: L.BatchedLinear(4, 2, bias=False, rng=0), (5, 4), "normal"),
]
OPSETS = [11, 13, 14, 17, 18, 20]


def _x(shape, kind, batch=3, seed=0):
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    return {"normal": x, "wide": 4 * x, "positive": 0.5 + np.abs(x)}[kind]


def _ort(model_or_path, x):
    data = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _randomise(net, seed=1):
    rng = np.random.default_rng(seed)
    for _, layer in net.named_layers():
        for p in layer.params.values():
            p[...] = rng.standard_normal(p.shape) * 0.5 + (1.0 if p.ndim == 1 else 0.0)
    return net


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("factory, shape, kind", NEW_LAYERS)
def test_new_layers_export_at_every_opset_and_import_back(factory, shape, kind, opset, tmp_path):
    net = _randomise(factory())
    path = str(export_onnx(net, tmp_path / "m.onnx", shape, opset=opset))
    x = _x(shape, kind)
    want = net.forward(x)
    np.testing.assert_allclose(_ort(path, x), want, rtol=1e-5, atol=1e-5)
    back = load_onnx(path)
    np.testing.assert_allclose(back.forward(x), want, rtol=1e-5, atol=1e-5)


def test_binary_op_graph_exports_and_imports_back(tmp_path):
    layers = {"conv": vn.Conv2d(3, 4, 3, padding=1, rng=0), "pool": vn.GlobalAvgPool2d(),
              "gate": vn.Sigmoid(), "scale": L.BinaryOp("mul"), "floor": L.BinaryOp("max")}
    nodes = [L.Node("layer", "conv", ("x",), "f"), L.Node("layer", "pool", ("f",), "p"),
             L.Node("layer", "gate", ("p",), "g"), L.Node("layer", "scale", ("f", "g"), "s"),
             L.Node("layer", "floor", ("s", "f"), "y")]
    net = L.Graph(layers, nodes, "x", "y")
    path = str(export_onnx(net, tmp_path / "g.onnx", (3, 5, 5)))
    x = _x((3, 5, 5), "normal")
    np.testing.assert_allclose(_ort(path, x), net.forward(x), rtol=1e-5, atol=1e-6)
    back = load_onnx(path)
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-5, atol=1e-6)
    assert sorted(type(layer).__name__ for _, layer in back.named_children()).count("BinaryOp") == 2


# ---- PyTorch exports of the blocks ---------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, c, act=nn.SiLU, gate=nn.Sigmoid):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.act = act()
        self.reduce, self.expand = nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        self.gate = gate()

    def forward(self, x):
        x = self.act(self.conv(x))
        s = self.gate(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return x * s


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, channels-last LayerNorm, Linear-GELU-Linear, layer scale, residual."""

    def __init__(self, c=3):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.act, self.pw2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(self.act(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ChannelsFirstNorm(nn.Module):
    """ConvNeXt's LayerNorm over channels written out: mean, variance by Pow, Sqrt."""

    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.weight, self.bias = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.rand(c))

    def forward(self, x):
        x = self.conv(x)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SplitAttention(nn.Module):
    """ResNeSt's radix-2 split attention: sum of splits, pooled, softmax over the radix axis."""

    def __init__(self, c=4, radix=2):
        super().__init__()
        self.radix = radix
        self.conv = nn.Conv2d(3, c * radix, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(c, 8, 1), nn.Conv2d(8, c * radix, 1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        n, rc = x.shape[:2]
        splits = torch.split(x, rc // self.radix, dim=1)
        gap = torch.relu(self.fc1(sum(splits).mean((2, 3), keepdim=True)))
        att = self.fc2(gap).view(n, self.radix, -1).softmax(dim=1)
        att = att.reshape(n, -1, 1, 1)
        parts = torch.split(att, rc // self.radix, dim=1)
        return sum(a * s for a, s in zip(parts, splits))


def _export(module, x, path, opset, dynamic=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.from_numpy(x), str(path), dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}} if dynamic else None)
    return str(path)


def _torch(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


BLOCKS = {
    "se_silu": lambda: SqueezeExcite(4),
    "se_hardswish": lambda: SqueezeExcite(4, nn.Hardswish, nn.Hardsigmoid),
    "convnext": lambda: ConvNeXtBlock(),
    "channels_first_norm": lambda: ChannelsFirstNorm(),
    "split_attention": lambda: SplitAttention(),
}


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_pytorch_blocks_import_and_equal_pytorch(name, opset, tmp_path):
    torch.manual_seed(0)
    module = BLOCKS[name]()
    x = _x((3, 6, 6), "normal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_onnx(_export(module, x, tmp_path / "b.onnx", opset))
    np.testing.assert_allclose(net.forward(x), _torch(module, x), rtol=1e-4, atol=1e-5)
    kinds = {type(layer).__name__ for _, layer in net.named_children()}
    if name == "se_silu":
        assert "SiLU" in kinds          # Sigmoid x input fused
    if name == "se_hardswish":
        assert "HardSwish" in kinds and "HardSigmoid" in kinds and "BinaryOp" in kinds
    if name == "convnext":
        assert {"LayerNorm" if opset >= 17 else "Reduce", "BatchedLinear"} <= kinds


def test_silu_fusion_keeps_the_gate_when_something_else_reads_it():
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("Mul", ["x", "s"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "s"], ["y"], name="add")]
    model = _graph(nodes, (3, 4))
    net = load_onnx(model)
    kinds = [type(layer).__name__ for _, layer in net.named_children()]
    assert kinds == ["Sigmoid", "BinaryOp"]
    x = _x((3, 4), "normal")
    np.testing.assert_allclose(net.forward(x), _ort(model, x), rtol=1e-6, atol=1e-6)


# ---- Dropout masks, fixed batches, refusals ---------------------------------------------------
def _graph(nodes, shape, opset=13, batch="N", inits=()):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *shape])]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, [out], initializer=inits),
                             opset_imports=[helper.make_opsetid("", opset)])


def test_unread_dropout_mask_of_caffe2_files_imports():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Dropout", ["r"], ["d", "mask"], name="drop", ratio=0.5),
             helper.make_node("Relu", ["d"], ["y"])]
    model = _graph(nodes, (5,), opset=9)
    x = _x((5,), "normal")
    np.testing.assert_allclose(load_onnx(model).forward(x), _ort(model, x))


def test_read_dropout_mask_is_all_ones_in_inference():
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["d", "m"], ["y"])]
    model = _graph(nodes, (4, 3), opset=12)
    x = _x((4, 3), "normal")
    np.testing.assert_allclose(load_onnx(model).forward(x), _ort(model, x))
    np.testing.assert_allclose(load_onnx(model).forward(x), x)


def test_fixed_batch_of_one_imports_with_a_free_batch_and_says_so(tmp_path):
    torch.manual_seed(0)
    module = SqueezeExcite(4)
    x = _x((3, 6, 6), "normal", batch=1)
    path = _export(module, x, tmp_path / "fixed.onnx", 17, dynamic=False)
    assert onnx.load(path).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    with pytest.warns(UserWarning, match=r"graph input 'x' fixes the batch to 1; no node depends "
                                         r"on it, so volnet reads it as a free batch axis"):
        net = load_onnx(path)
    x4 = _x((3, 6, 6), "normal", batch=4)
    np.testing.assert_allclose(net.forward(x4), _torch(module, x4), rtol=1e-4, atol=1e-5)


def test_fixed_batch_that_a_node_depends_on_is_refused_naming_it(tmp_path):
    class Everything(nn.Module):
        def forward(self, x):
            return torch.relu(x).reshape(-1)          # the batch merged into the features

    x = _x((3, 2, 2), "normal", batch=1)
    path = _export(Everything(), x, tmp_path / "all.onnx", 13, dynamic=False)
    with pytest.raises(ConfigError, match=r"\(Reshape\), shape: target \[-1\] from input "
                                          r"\(N, 3, 2, 2\) does not keep the batch axis"):
        load_onnx(path)


def test_binary_op_across_ranks_is_refused_naming_the_node():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Flatten", ["x"], ["b"]),
             helper.make_node("Mul", ["a", "b"], ["y"], name="gate")]
    with pytest.raises(ConfigError, match=r"'gate' \(Mul\), .*of different ranks would "
                                          r"broadcast the batch axis"):
        load_onnx(_graph(nodes, (1, 12)))


def test_reduction_over_the_batch_axis_is_refused():
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="total")
    with pytest.raises(ConfigError, match=r"'total' \(ReduceSum\), axes: \[0\] of \(N, 3\) "
                                          r"include the batch axis"):
        load_onnx(_graph([node], (3,), inits={"axes": np.array([0], np.int64)}))


def test_layer_norm_statistics_outputs_may_be_declared_but_not_read():
    ln = helper.make_node("LayerNormalization", ["x", "g", "b"], ["n", "mean", "inv"], name="ln",
                          axis=-1)
    inits = {"g": np.full(4, 2.0, np.float32), "b": np.zeros(4, np.float32)}
    model = _graph([ln, helper.make_node("Relu", ["n"], ["y"])], (3, 4), opset=17, inits=inits)
    x = _x((3, 4), "normal")
    np.testing.assert_allclose(load_onnx(model).forward(x), _ort(model, x), rtol=1e-5, atol=1e-6)
    read = _graph([ln, helper.make_node("Relu", ["mean"], ["y"], name="uses_mean")], (3, 4),
                  opset=17, inits=inits)
    with pytest.raises(ConfigError, match=r"'uses_mean' \(Relu\), input: 'mean' is the Mean "
                                          r"output of LayerNormalization 'ln', which volnet"):
        load_onnx(read)


def test_matmul_of_two_computed_tensors_imports_and_exports():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["x", "t"], ["y"], name="gram")]
    model = _graph(nodes, (3, 4, 5))
    x = _x((3, 4, 5), "normal")
    net = load_onnx(model)
    np.testing.assert_allclose(net.forward(x), _ort(model, x), rtol=1e-5, atol=1e-5)
    assert "MatMul" in {type(layer).__name__ for _, layer in net.named_children()}
    again = vn.io.onnx.export.to_onnx_model(net, (3, 4, 5))
    np.testing.assert_allclose(_ort(again, x), net.forward(x), rtol=1e-5, atol=1e-5)
