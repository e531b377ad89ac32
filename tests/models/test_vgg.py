"""VGG: published parameter counts, torchvision keys, parity with torch, a training step."""

import numpy as np
import pytest
import torch
from batch_norm_stats import randomise_norm_stats
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import VGG

import volnet as vn
from volnet.models import vgg, vgg11, vgg13, vgg16, vgg19
from volnet.models.vgg import VGG_CONFIGS

# torchvision's model cards (torchvision.models.VGG*_Weights.IMAGENET1K_V1.meta["num_params"])
PUBLISHED = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_torchvision(name, lazy_init):
    net = vn.models.build(name)
    assert net.num_params() == PUBLISHED[name]
    assert net.output_shape((3, 224, 224)) == (1000,)


def test_vgg16_keys_are_torchvision_keys(lazy_init):
    keys = list(vgg16().state_dict())
    conv_positions = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]   # torchvision vgg16
    expected = [f"features.{i}.{p}" for i in conv_positions for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert keys == expected


def test_vgg16_conv5_3_is_features_28(lazy_init):
    net = vgg16()
    assert isinstance(net.features[28], vn.Conv2d)
    assert net.features[:29].output_shape((3, 224, 224)) == (512, 14, 14)
    assert net.features.output_shape((3, 224, 224)) == (512, 7, 7)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_forward_matches_torch(batch_norm, rng):
    # full VGG-11 convolutions; narrow FC layers keep the float64 copy small
    net = vgg("vgg11", batch_norm=batch_norm, num_classes=10, hidden_features=32, seed=3)
    net.astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: VGG(VGG_CONFIGS["vgg11"], batch_norm, 10, hidden=32))
    x = rng.standard_normal((2, 3, 32, 32))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_vgg16_trains_a_step():
    # all thirteen CONVs at full width; narrow FC layers keep the 100 M-weight fc6 out of the test
    net = vgg16(num_classes=10, seed=0, hidden_features=64)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    labels = np.array([1, 7])
    _, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), labels)
    dx = net.backward(dscores)
    assert dx.shape == x.shape
    grads = {name: g for name, _, g in net.named_params()}
    assert all(g is not None and np.isfinite(g).all() for g in grads.values())
    assert np.abs(grads["features.0.weight"]).sum() > 0


@pytest.mark.parametrize("builder", [vgg11, vgg13, vgg19])
def test_other_depths_train_a_step(builder):
    net = builder(num_classes=5, hidden_features=16, in_channels=1, seed=1)
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32)
    scores = net.forward(x, training=True)
    assert scores.shape == (2, 5)
    net.backward(np.ones_like(scores))
    assert net.features[0].grads["weight"].shape == (64, 1, 3, 3)


def test_unknown_configuration_is_a_config_error():
    with pytest.raises(vn.ConfigError, match="vgg16"):
        vgg("vgg17")


def test_training_step_gradients_match_torch(rng):
    net = vgg("vgg11", batch_norm=True, num_classes=4, hidden_features=16, seed=5, drop_prob=0.0)
    net.astype(np.float64)
    ref = copy_into_torch(net, lambda: VGG(VGG_CONFIGS["vgg11"], True, 4, hidden=16)).train()
    for module in ref.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0                                    # same (absent) masks on both sides
    x = rng.standard_normal((2, 3, 32, 32))
    upstream = rng.standard_normal((2, 4))
    net.forward(x, training=True)
    dx = net.backward(upstream)
    xt = torch.from_numpy(x).requires_grad_()
    (ref(xt) * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-9)
    torch_params = dict(ref.named_parameters())
    for name, _, grad in net.named_params():
        np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=1e-6, atol=1e-9,
                                   err_msg=name)
