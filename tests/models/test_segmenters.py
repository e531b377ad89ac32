"""The zoo's segmenters: shapes, receptive fields worked out by hand, PyTorch as the oracle
of the forward pass, and ONNX export + import (checked by onnxruntime)."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from volnet.io.onnx.export import export_onnx
from volnet.io.onnx.importer import load_onnx
from volnet.models.dilated import dilated, dilated_context
from volnet.models.fcn import bilinear_kernel, fcn
from volnet.models.registry import INPUT_SHAPES, MODELS
from volnet.tools.receptive_field import receptive_field

BUILDERS = {"fcn": fcn, "dilated": dilated, "dilated_context": dilated_context}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_registered_and_label_every_pixel(name):
    assert MODELS[name] is BUILDERS[name] and INPUT_SHAPES[name] == (1, 64, 64)
    assert BUILDERS[name]().output_shape((1, 64, 64)) == (11, 64, 64)
    assert BUILDERS[name](num_classes=4, in_channels=3).output_shape((3, 96, 128)) == (4, 96, 128)


def test_receptive_fields_by_hand():
    # front-end: 3, 5 (two 3x3), 6 (pool), 10, 14 (two 3x3 at jump 2), 16 (pool),
    # 32, 48 (two dilation-2 3x3 at jump 4: +2*2*4 each), 1x1 score: 48; the bilinear
    # upsampling blends two score units, one jump (4) apart: 52
    assert receptive_field(dilated(), (1, 64, 64)).size == (52, 52)
    # context module: +2*d*4 for d in 1, 1, 2, 4, 8, 16, 1 -> 48 + 264 = 312, + 4 = 316
    assert receptive_field(dilated_context(), (1, 64, 64)).size == (316, 316)


def _torch_frontend(net, context):
    t = torch.nn
    layers = OrderedDict([
        ("conv1_1", t.Conv2d(1, 16, 3, padding=1)), ("relu1_1", t.ReLU()),
        ("conv1_2", t.Conv2d(16, 16, 3, padding=1)), ("relu1_2", t.ReLU()), ("pool1", t.MaxPool2d(2)),
        ("conv2_1", t.Conv2d(16, 32, 3, padding=1)), ("relu2_1", t.ReLU()),
        ("conv2_2", t.Conv2d(32, 32, 3, padding=1)), ("relu2_2", t.ReLU()), ("pool2", t.MaxPool2d(2)),
        ("conv3_1", t.Conv2d(32, 32, 3, padding=2, dilation=2)), ("relu3_1", t.ReLU()),
        ("conv3_2", t.Conv2d(32, 32, 3, padding=2, dilation=2)), ("relu3_2", t.ReLU()),
        ("score", t.Conv2d(32, 11, 1))])
    if context:
        ctx = OrderedDict()
        for i, d in enumerate((1, 1, 2, 4, 8, 16, 1)):
            name = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1",
                    "ctx_conv5_1", "ctx_fc1")[i]
            ctx[name] = t.Conv2d(11, 11, 3, padding=d, dilation=d)
            ctx[f"ctx_relu{i + 1}"] = t.ReLU()
        ctx["ctx_final"] = t.Conv2d(11, 11, 1)
        layers["context"] = t.Sequential(ctx)
    layers["upsample"] = t.Upsample(scale_factor=4, mode="bilinear", align_corners=False)
    ref = t.Sequential(layers)
    ref.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    return ref


@pytest.mark.parametrize("context", [False, True])
def test_dilated_matches_the_same_network_in_pytorch(context):
    net = dilated_context(seed=3) if context else dilated(seed=3)
    for _, p, _ in net.named_params():     # away from the identity start: test every weight
        p += np.random.default_rng(0).normal(0, 0.05, p.shape).astype(p.dtype)
    x = np.random.default_rng(1).random((2, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = _torch_frontend(net, context)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(net.forward(x), ref, rtol=1e-4, atol=1e-4)


def test_fcn_transposed_upsampling_starts_as_bilinear_interpolation():
    """The learned 2x step starts as PyTorch's bilinear interpolation (align_corners=False)
    away from the border, where the transposed convolution sees zero padding."""
    x = np.random.default_rng(2).random((1, 3, 8, 8))
    up = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(bilinear_kernel(3, 2)),
                                              stride=2, padding=1).numpy()
    ref = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=2, mode="bilinear",
                                          align_corners=False).numpy()
    np.testing.assert_allclose(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-12)
    net = fcn()
    np.testing.assert_array_equal(net["fuse"].body["up2"].params["weight"], bilinear_kernel(11, 2))
    assert not net["fuse"].shortcut.params["weight"].any()       # the skip starts at zero


def test_fcn_skip_adds_finer_scores():
    """With the skip's weights set, the output changes; with them zero it is the coarse path."""
    net = fcn(seed=1)
    x = np.random.default_rng(3).random((1, 1, 64, 64)).astype(np.float32)
    coarse = net.forward(x)
    net["fuse"].shortcut.params["bias"][...] = np.arange(11, dtype=np.float32)
    # a per-class constant added at stride 4 survives bilinear upsampling unchanged
    np.testing.assert_allclose(net.forward(x) - coarse,
                               np.broadcast_to(np.arange(11).reshape(1, 11, 1, 1), coarse.shape),
                               atol=1e-5)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_onnx_export_and_import_round_trip(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = BUILDERS[name](seed=4)
    path = tmp_path / f"{name}.onnx"
    export_onnx(net, str(path), (1, 64, 64))
    x = np.random.default_rng(5).random((2, 1, 64, 64)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = net.forward(x)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], ours,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(load_onnx(str(path)).forward(x), ours, rtol=1e-5, atol=1e-5)
