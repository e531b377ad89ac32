"""Inception-ResNet-v2: the timm port's count and keys, eval parity with a torch.nn model
carrying those keys, weights loading without renaming, residual blocks training."""

import numpy as np
import torch
from batch_norm_stats import randomise_norm_stats
from torch_ref_inception_resnet import InceptionResNetV2
from torch_ref_inception_resnet import block35 as torch_block35
from zoo_helpers import copy_into_torch, torch_forward

import volnet as vn
from volnet.models.inception_resnet_v2 import block8, block17, block35, inception_resnet_v2


def test_parameter_count_keys_and_stages(lazy_init):
    net = inception_resnet_v2()
    with torch.device("meta"):
        ref = InceptionResNetV2()
    # 55,843,464: timm's inception_resnet_v2 (Cadene's port of Google's checkpoint)
    assert net.num_params() == sum(p.numel() for p in ref.parameters()) == 55_843_464
    assert list(net.state_dict()) == list(ref.state_dict())      # same keys, same order
    for key in ("conv2d_1a.conv.weight", "mixed_5b.branch3.1.conv.weight",
                "repeat.9.branch2.2.bn.running_var", "repeat_1.19.conv2d.bias",
                "repeat_2.8.branch1.2.conv.weight", "block8.conv2d.weight",
                "conv2d_7b.bn.num_batches_tracked", "classif.weight"):
        assert key in net.state_dict()
    table = vn.summary(net, (3, 299, 299))
    out = {r["name"]: r["output"] for r in table.rows}
    assert out["maxpool_5a"] == "35x35x192" and out["mixed_5b"] == "35x35x320"
    assert out["repeat.9"] == "35x35x320" and out["mixed_6a"] == "17x17x1088"
    assert out["repeat_1.19"] == "17x17x1088" and out["mixed_7a"] == "8x8x2080"
    assert out["repeat_2.8"] == "8x8x2080" and out["block8"] == "8x8x2080"
    assert out["conv2d_7b.relu"] == "8x8x1536"
    assert round(table.totals["macs"] / 1e9, 1) == 13.2            # timm lists 13.2 GMACs


def test_eval_forward_matches_torch(rng):
    net = inception_resnet_v2(num_classes=10, seed=11).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: InceptionResNetV2(10))
    x = rng.standard_normal((1, 3, 75, 75))                    # the smallest size it accepts
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_torch_weights_load_without_renaming(rng):
    torch.manual_seed(0)
    ref = torch_block35().double().eval()
    for module in ref.modules():                               # non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    block = block35(rng=0).astype(np.float64)
    vn.io.weights.load_weights(block, {k: v.numpy() for k, v in ref.state_dict().items()})
    x = rng.standard_normal((2, 320, 5, 5))
    np.testing.assert_allclose(block.forward(x), torch_forward(ref, x), rtol=1e-10, atol=1e-12)


def test_residual_blocks_train_a_step():
    # the whole net is checked against torch above; here the residual modules (concat, linear
    # 1x1, scale, sum, RELU or none) get gradients for every parameter on a small grid
    rng = np.random.default_rng(0)
    net = vn.Sequential(block17(0.1, rng), vn.Conv2d(1088, 2080, 1, rng=rng),
                        block8(1.0, rng, relu=False))
    x = rng.standard_normal((2, 1088, 3, 3)).astype(np.float32)
    out = net.forward(x, training=True)
    assert out.shape == (2, 2080, 3, 3)
    assert net.backward(np.ones_like(out)).shape == x.shape
    assert all(g is not None and np.isfinite(g).all() for _, _, g in net.named_params())


def test_torch_exported_block_imports_from_onnx(rng, tmp_path):
    # PyTorch writes the residual scaling as Mul by a one-number constant: it becomes a Scale
    import warnings

    torch.manual_seed(1)
    ref = torch_block35().eval()
    for module in ref.modules():    # distinct folded biases (torch shares identical constants)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    x = rng.standard_normal((1, 320, 4, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ref, torch.from_numpy(x), str(tmp_path / "b.onnx"), dynamo=False)
    net = vn.io.load_onnx(tmp_path / "b.onnx")
    assert any(isinstance(layer, vn.Scale) and np.isclose(layer.factor, 0.17)
               for _, layer in net.named_layers())
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-5, atol=1e-5)
