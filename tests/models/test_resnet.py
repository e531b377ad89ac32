"""ResNet: published parameter counts, torchvision keys, parity with torch, a training step."""

import numpy as np
import pytest
import torch
from batch_norm_stats import randomise_norm_stats
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import BasicBlock, Bottleneck, ResNet

import volnet as vn
from volnet.models import resnet, resnet18, resnet152

# torchvision's model cards (ResNet*_Weights.IMAGENET1K_V1.meta["num_params"])
PUBLISHED = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160, 152: 60_192_808}


@pytest.mark.parametrize("depth", sorted(PUBLISHED))
def test_parameter_count_matches_torchvision(depth, lazy_init):
    net = vn.models.build(f"resnet{depth}")
    assert net.num_params() == PUBLISHED[depth]
    assert net.output_shape((3, 224, 224)) == (1000,)


def test_resnet18_keys_follow_torchvision(lazy_init):
    keys = set(resnet18().state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_mean",
                "layer4.1.conv2.weight", "fc.weight", "fc.bias", "bn1.num_batches_tracked"):
        assert key in keys
    assert not any(k.startswith("layer1.0.downsample") for k in keys)   # identity shortcut
    assert len(keys) == 122   # torchvision resnet18().state_dict() has 122 entries


@pytest.mark.parametrize("depth, block, counts", [(18, BasicBlock, [2, 2, 2, 2]),
                                                  (50, Bottleneck, [3, 4, 6, 3])])
def test_forward_matches_torch(depth, block, counts, rng):
    widths = (8, 16, 16, 32)   # narrow stages, same depth and wiring
    net = resnet(depth, num_classes=10, widths=widths, seed=2).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: ResNet(block, counts, 10, widths))
    x = rng.standard_normal((2, 3, 64, 64))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_resnet18_full_width_matches_torch(rng):
    net = resnet18(seed=0).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: ResNet(BasicBlock, [2, 2, 2, 2]))
    x = rng.standard_normal((1, 3, 64, 64))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_resnet152_trains_a_step_at_small_size():
    net = resnet152(num_classes=10, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    scores = net.forward(x, training=True)          # 32 -> 16 -> 8 -> 8, 4, 2, 1
    assert scores.shape == (2, 10)
    loss, dscores = vn.softmax_cross_entropy(scores, np.array([0, 3]))
    assert np.isfinite(loss)
    assert net.backward(dscores).shape == x.shape
    assert all(g is not None for _, _, g in net.named_params())


def test_unknown_depth_is_a_config_error():
    with pytest.raises(vn.ConfigError, match="18, 34, 50, 101, 152"):
        resnet(20)


@pytest.mark.parametrize("depth, block, counts", [(18, BasicBlock, [2, 2, 2, 2]),
                                                  (50, Bottleneck, [3, 4, 6, 3])])
def test_training_step_gradients_match_torch(depth, block, counts, rng):
    widths = (4, 8, 8, 16)
    net = resnet(depth, num_classes=5, widths=widths, seed=3).astype(np.float64)
    ref = copy_into_torch(net, lambda: ResNet(block, counts, 5, widths)).train()
    x = rng.standard_normal((2, 3, 32, 32))
    upstream = rng.standard_normal((2, 5))
    scores = net.forward(x, training=True)              # batch statistics, as torch.train()
    dx = net.backward(upstream)
    xt = torch.from_numpy(x).requires_grad_()
    out = ref(xt)
    (out * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(scores, out.detach().numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-9)
    torch_params = dict(ref.named_parameters())
    for name, _, grad in net.named_params():
        np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=1e-6, atol=1e-9,
                                   err_msg=name)
