"""ONNX: every layer and zoo model exports and runs in onnxruntime with volnet's outputs;
graphs exported by torch.onnx.export import into volnet with PyTorch's outputs."""

import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from batch_norm_stats import randomise_norm_stats
from torch import nn
from torch_nets import ResNet18, randomise, run

import volnet as vn
from volnet import layers as L
from volnet.errors import CheckpointError, ConfigError
from volnet.io import MissingDependencyError, export_onnx, load_onnx
from volnet.layers import Graph, Node, Reshape


def ort_run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]




def _graph_case():
    layers = {"conv": vn.Conv2d(3, 4, 3, padding=1, rng=0), "relu": vn.ReLU(),
              "pool": vn.MaxPool2d(2), "flat": Reshape((-1,))}
    nodes = [Node("layer", "conv", ("x",), "a"), Node("layer", "relu", ("a",), "b"),
             Node("add", "sum", ("a", "b"), "c"), Node("concat", "cat", ("c", "a"), "d"),
             Node("layer", "pool", ("d",), "e")]
    return Graph({k: layers[k] for k in ("conv", "relu", "pool")}, nodes, "x", "e")


LAYER_CASES = [   # (factory, per-example input shape)
    (lambda: vn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0), (3, 9, 9)),
    (lambda: vn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=2, groups=2,
                       bias=False, rng=0), (4, 11, 10)),
    (lambda: vn.Conv2d(3, 5, 1, rng=0), (3, 4, 4)),
    (lambda: vn.ConvTranspose2d(3, 4, 4, stride=2, padding=1, rng=0), (3, 5, 6)),
    (lambda: vn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                                dilation=(1, 2), groups=2, bias=False, rng=0), (4, 4, 3)),
    (lambda: vn.Linear(12, 5, rng=0), (12,)),
    (lambda: vn.Upsample(scale_factor=2), (2, 3, 4)),
    (lambda: vn.Upsample(scale_factor=(3, 2), mode="bilinear"), (2, 3, 4)),
    (lambda: vn.Upsample(size=(7, 8), mode="bilinear"), (2, 3, 4)),
    (lambda: vn.Upsample(size=(6, 5)), (2, 3, 4)),
    (lambda: vn.Linear(12, 5, bias=False, rng=0), (12,)),
    (lambda: vn.MaxPool2d(3, stride=2), (2, 9, 9)),
    (lambda: vn.MaxPool2d(3, stride=2, padding=1), (2, 8, 8)),
    (lambda: vn.MaxPool2d(3, stride=2, ceil_mode=True), (2, 8, 8)),
    (lambda: vn.AvgPool2d(2), (2, 6, 6)),
    (lambda: vn.AvgPool2d(3, stride=2, padding=1), (2, 7, 7)),
    (lambda: vn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    (lambda: vn.GlobalAvgPool2d(), (3, 5, 4)),
    (lambda: vn.AdaptiveAvgPool2d(2), (3, 6, 4)),
    (lambda: vn.AdaptiveAvgPool2d(3), (3, 3, 3)),
    (lambda: vn.AdaptiveAvgPool2d(1), (3, 5, 5)),
    (lambda: vn.AdaptiveAvgPool2d(7), (3, 1, 1)),
    (lambda: vn.ReLU(), (3, 4, 4)),
    (lambda: vn.LeakyReLU(0.2), (3, 4, 4)),
    (lambda: vn.Tanh(), (6,)),
    (lambda: vn.Sigmoid(), (6,)),
    (lambda: vn.Softmax(), (6,)),
    (lambda: vn.Softmax(dim=1), (3, 2, 2)),
    (lambda: vn.Identity(), (3, 2, 2)),
    (lambda: vn.Flatten(), (3, 2, 2)),
    (lambda: vn.Dropout(0.5), (7,)),
    (lambda: vn.BatchNorm2d(3), (3, 4, 4)),
    (lambda: vn.BatchNorm1d(5), (5,)),
    (lambda: vn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0), (7, 3, 3)),
    (lambda: vn.Sequential(vn.Conv2d(2, 3, 3, rng=0), vn.ReLU(), vn.Flatten(),
                           vn.Linear(12, 4, rng=1)), (2, 4, 4)),
    (lambda: vn.Residual(vn.Sequential(vn.Conv2d(3, 3, 3, padding=1, rng=0), vn.ReLU())), (3, 5, 5)),
    (lambda: vn.Residual(vn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0),
                         vn.Conv2d(3, 4, 1, stride=2, rng=1), vn.ReLU()), (3, 6, 6)),
    (lambda: vn.Concat(vn.Conv2d(3, 2, 1, rng=0), vn.Sequential(vn.Conv2d(3, 5, 3, padding=1, rng=1)),
                       vn.MaxPool2d(3, stride=1, padding=1)), (3, 5, 5)),
    (lambda: Reshape((4, -1)), (2, 4, 4)),
    (lambda: vn.layers.ChannelAffine.imagenet_to_unit_range(), (3, 4, 4)),
    (lambda: vn.Sequential(vn.layers.ChannelAffine((2.0, 0.5), (0.0, 0.0)), vn.ReLU(),
                           vn.layers.ChannelAffine((1.0, 1.0), (0.25, -1.0))), (2, 3, 3)),
    (lambda: vn.Sequential(vn.Scale(0.17), vn.ReLU()), (3, 2, 2)),
    (lambda: vn.Sequential({"aux": vn.layers.SideBranch(vn.Sequential(vn.Flatten(),
                                                                       vn.Linear(12, 2))),
                            "fc": vn.Sequential(vn.Flatten(), vn.Linear(12, 3))}), (3, 2, 2)),
    (_graph_case, (3, 4, 4)),
    # the layers the importer brought in
    (lambda: L.ConstantPad2d((0, 1, 2, 0), value=-0.5), (2, 3, 4)),
    (lambda: L.ChannelShuffle(2), (6, 3, 3)),
    (lambda: L.PReLU(), (3, 2, 2)),
    (lambda: L.PReLU(3), (3, 2, 2)),
    (lambda: L.PReLU(weight_shape=(2, 1)), (3, 2, 4)),
    (lambda: L.ELU(0.5), (3, 2, 2)),
    (lambda: L.Clip(-0.5, None), (5,)),
    (lambda: L.ReLU6(), (3, 2, 2)),
    (lambda: L.LogSoftmax(), (6,)),
    (lambda: L.LogSoftmax(dim=2), (3, 2, 2)),
    (lambda: L.GlobalMaxPool2d(), (3, 4, 5)),
    (lambda: L.Transpose((1, 2, 0)), (3, 2, 4)),
    (lambda: L.Narrow(1, 1, 2), (4, 2, 3)),
    (lambda: L.ConstantOp("add", (4,), value=np.arange(4.0)), (3, 2, 4)),
    (lambda: L.ConstantOp("div", (3, 1, 1), reverse=True, value=np.arange(1.0, 4.0).reshape(3, 1, 1)),
     (3, 2, 2)),
]


def test_every_layer_type_has_an_exporter():
    from volnet.io.onnx.registry import EXPORTERS

    types = [getattr(vn.layers, name) for name in vn.layers.__all__ if name != "Node"]
    abstract = {vn.Layer, vn.layers.Container, vn.layers.MultiInputLayer}
    missing = [t.__name__ for t in types
               if t not in abstract and not any(cls in EXPORTERS for cls in t.__mro__)]
    assert not missing, missing


@pytest.mark.parametrize("factory, shape", LAYER_CASES)
def test_every_layer_exports_and_matches_onnxruntime(factory, shape, tmp_path, rng):
    net = randomise_norm_stats(factory(), rng, spread=0.2)
    path = export_onnx(net, tmp_path / "m.onnx", shape)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    for batch in (1, 3):   # the batch axis is dynamic
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        np.testing.assert_allclose(ort_run(path, x), net.forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factory, shape", LAYER_CASES)
def test_every_layer_round_trips_through_load_onnx(factory, shape, tmp_path, rng):
    net = randomise_norm_stats(factory(), rng, spread=0.2)
    back = load_onnx(export_onnx(net, tmp_path / "m.onnx", shape))
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    np.testing.assert_allclose(back.forward(x), net.forward(x), rtol=1e-5, atol=1e-6)
    assert back.output_shape(shape) == net.output_shape(shape)


def narrow_hidden_fc(net, width=32):
    """Shrink hidden FC layers (a Linear feeding another Linear through ReLU/Dropout in the
    same Sequential) to ``width`` outputs, so that 4096-wide classifiers (AlexNet) export
    and run in a test's time. Layer types, order and wiring are untouched."""
    between = (vn.ReLU, vn.Dropout, vn.Identity)
    for _, seq in list(net.named_layers()):
        if not isinstance(seq, vn.Sequential):
            continue
        run = []
        for name, child in seq.named_children() + [("", None)]:
            if isinstance(child, vn.Linear):
                run.append(name)
            elif not isinstance(child, between):
                for i, key in enumerate(run):
                    old = seq[key]
                    fan_in = old.in_features if i == 0 else min(seq[run[i - 1]].out_features, width)
                    out = old.out_features if i == len(run) - 1 else min(old.out_features, width)
                    if (fan_in, out) != (old.in_features, old.out_features):
                        seq[key] = vn.Linear(fan_in, out, rng=i)
                run = []
    return net


# Small inputs where the architecture allows (global/adaptive pooling before the FCs).
ZOO_INPUTS = {"resnet": (3, 32, 32), "vgg": (3, 32, 32), "alexnet_torchvision": (3, 64, 64),
              "googlenet": (3, 64, 64), "inception": (3, 75, 75)}
# Same depth, blocks and layer types with fewer channels / narrower hidden FC layers.
ZOO_KWARGS = {"resnet": {"widths": (8, 16, 16, 32)}, "vgg": {"hidden_features": 32}}


# conv_vae's Reparameterize (a sampling step) has no ONNX operator; its halves export alone
@pytest.mark.parametrize("name", sorted(set(vn.models.MODELS) - {"conv_vae"}))
def test_every_zoo_model_exports_matches_onnxruntime_and_imports_back(name, tmp_path, rng):
    family = next((k for k in ZOO_INPUTS if name.startswith(k)), name)
    shape = ZOO_INPUTS.get(family, vn.models.INPUT_SHAPES[name])
    net = narrow_hidden_fc(randomise_norm_stats(vn.models.build(name, **ZOO_KWARGS.get(family, {})), rng,
                                                    spread=0.2))
    x = rng.standard_normal((1, *shape)).astype(np.float32)
    ref = net.forward(x)
    path = export_onnx(net, tmp_path / f"{name}.onnx", shape)
    tolerance = {"rtol": 1e-4, "atol": 1e-5 * max(1.0, np.abs(ref).max())}
    np.testing.assert_allclose(ort_run(path, x), ref, **tolerance)
    np.testing.assert_allclose(load_onnx(path).forward(x), ref, **tolerance)   # and back


class TorchZooParts(nn.Module):
    """One PyTorch model using the operators the importer must understand. (PyTorch writes
    LocalResponseNorm as a chain of Pow/Pad/AveragePool nodes, not LRN; the LRN import is
    covered by the round-trip tests, whose LRN nodes onnxruntime checks.)"""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)                     # after a ReLU: not fused into the conv
        self.grouped = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.branch1 = nn.Conv2d(8, 4, 1)
        self.branch2 = nn.AvgPool2d(3, stride=1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(12, 10)
        self.proj = nn.Linear(10, 6, bias=False)
        self.bn1d = nn.BatchNorm1d(6)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.bn(torch.relu(self.conv(x)))
        x = self.pool(torch.relu(self.grouped(x)) + x)
        x = torch.cat([self.branch1(x), self.branch2(x)], dim=1)          # 4 + 8 channels
        return self.softmax(self.bn1d(self.proj(torch.relu(self.fc(self.drop(
            torch.flatten(self.gap(x), 1)))))))


def torch_export(module, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.from_numpy(x), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}})
    return path


def test_torch_exported_model_with_every_supported_op_imports(tmp_path, rng):
    torch.manual_seed(0)
    module = randomise(TorchZooParts())
    with torch.no_grad():
        module.bn1d.running_mean.normal_(0, 0.2)
        module.bn1d.running_var.uniform_(0.5, 1.5)
    x = rng.standard_normal((3, 3, 12, 12)).astype(np.float32)
    path = torch_export(module, x, tmp_path / "parts.onnx")
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"Conv", "BatchNormalization", "MaxPool", "AveragePool", "Concat",
            "Add", "Flatten", "Gemm", "MatMul", "Softmax", "Relu"} <= ops
    net = load_onnx(path)
    for batch in (1, 3):
        np.testing.assert_allclose(net.forward(x[:batch]), run(module, x[:batch]), rtol=1e-5,
                                   atol=1e-6)


def test_torch_exported_resnet18_imports_with_torchvision_names(tmp_path, rng):
    torch.manual_seed(0)
    module = randomise(ResNet18(num_classes=10, widths=(8, 16, 16, 32)))
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    net = load_onnx(torch_export(module, x, tmp_path / "r18.onnx"))
    np.testing.assert_allclose(net.forward(x), run(module, x), rtol=1e-4, atol=1e-5)
    # PyTorch folds each batch norm into its conv; layers keep torchvision's module paths
    names = [name for name, _ in net.named_children()]
    assert {"conv1", "layer1.0.conv1", "layer2.0.downsample.0", "fc"} <= set(names)
    assert net.input_shape == (3, 32, 32)


def test_imported_graph_trains_and_replaces_its_head(tmp_path, rng):
    module = randomise(ResNet18(num_classes=10, widths=(4, 8, 8, 8)))
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    net = load_onnx(torch_export(module, x, tmp_path / "r.onnx")).astype(np.float64)
    net["fc"] = vn.Linear(8, 3, rng=0, dtype=np.float64)
    net.freeze("*").unfreeze("fc.*")
    assert [name for name, _, _ in net.named_params(trainable_only=True)] == ["fc.weight", "fc.bias"]
    xd = x.astype(np.float64)
    out = net.forward(xd, training=True)
    dout = rng.standard_normal(out.shape)
    dx = net.backward(dout)
    # the input gradient agrees with a central difference along a random direction
    direction, eps = rng.standard_normal(xd.shape), 1e-6
    numeric = (np.sum(net.forward(xd + eps * direction) * dout)
               - np.sum(net.forward(xd - eps * direction) * dout)) / (2 * eps)
    assert abs(numeric - np.sum(dx * direction)) < 1e-5 * max(1.0, abs(numeric))


def test_unsupported_operator_is_named(tmp_path, rng):
    class Sine(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    path = torch_export(Sine(), np.zeros((1, 3, 4, 4), np.float32), tmp_path / "sin.onnx")
    with pytest.raises(ConfigError, match=r"ONNX operator 'Sin' .* is not supported.*supported: "
                                          r"Add, AveragePool, BatchNormalization"):
        load_onnx(path)


def test_unsupported_attribute_values_are_named(tmp_path):
    path = export_onnx(vn.AdaptiveAvgPool2d(7), tmp_path / "e.onnx", (3, 1, 1))
    model = onnx.load(path)
    shape = next(t for t in model.graph.initializer if t.name.endswith("shape"))
    shape.CopyFrom(onnx.numpy_helper.from_array(np.array([2, 3, 7, 7], np.int64), shape.name))
    onnx.save(model, tmp_path / "f.onnx")
    with pytest.raises(ConfigError, match=r"Expand\), shape: \[2, 3, 7, 7\] from \(N, 3, 1, 1\) "
                                          r"adds or stretches the batch axis"):
        load_onnx(tmp_path / "f.onnx")


def test_export_refusals_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="even size 4 has no exact ONNX LRN equivalent"):
        export_onnx(vn.LocalResponseNorm(4), tmp_path / "a.onnx", (6, 3, 3))
    with pytest.raises(ConfigError, match="5x5 -> 2x2 are uneven"):
        export_onnx(vn.AdaptiveAvgPool2d(2), tmp_path / "b.onnx", (3, 5, 5))

    class Custom(vn.Identity.__mro__[1]):   # a new layer type with no exporter
        def _forward(self, x, training, keep_cache):
            return x

    with pytest.raises(ConfigError, match="no ONNX exporter for Custom at 1"):
        export_onnx(vn.Sequential(vn.ReLU(), Custom()), tmp_path / "c.onnx", (3,))
    with pytest.raises(vn.ShapeError):
        export_onnx(vn.Conv2d(3, 4, 3), tmp_path / "d.onnx", (2, 8, 8))
    assert not list(tmp_path.iterdir())   # nothing half-written


def test_failed_export_keeps_the_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_onnx(vn.ReLU(), path, (3,))
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_bad_files_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage that is not protobuf")
    with pytest.raises(CheckpointError, match="is not a valid ONNX model"):
        load_onnx(tmp_path / "junk.onnx")


def test_missing_onnx_package_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)   # makes `import onnx` fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'volnet\[onnx\]'"):
        export_onnx(vn.ReLU(), tmp_path / "m.onnx", (3,))
    with pytest.raises(ImportError):
        load_onnx(tmp_path / "m.onnx")


def test_imported_graph_saves_as_a_volnet_checkpoint(tmp_path, rng):
    module = randomise(ResNet18(num_classes=10, widths=(4, 8, 8, 8)))
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    net = load_onnx(torch_export(module, x, tmp_path / "r.onnx"))
    net["fc"] = vn.Linear(8, 3, rng=0)
    net.freeze("conv1.*")
    back = vn.load(vn.save(tmp_path / "g.safetensors", net))
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
    assert [n for n, _, _ in back.named_params()] == [n for n, _, _ in net.named_params()]
    assert "conv1.weight" not in [n for n, _, _ in back.named_params(trainable_only=True)]
