"""AlexNet: the lecture's numbers, both variants' counts, parity with torch, a training step."""

import numpy as np
import pytest
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import AlexNet, CaffeAlexNet

import volnet as vn
from volnet.models.alexnet import alexnet, alexnet_torchvision


def test_lecture_conv1_volume_weights_and_neurons(lazy_init):
    conv1 = alexnet().features.conv1
    out = conv1.output_shape((3, 227, 227))
    assert out == (96, 55, 55)                              # (227 - 11)/4 + 1 = 55
    assert conv1.params["weight"].size == 34_848            # 96 * 11 * 11 * 3
    assert conv1.params["bias"].size == 96
    assert int(np.prod(out)) == 290_400                     # 55 * 55 * 96 neurons


def test_lecture_volumes_follow_the_paper(lazy_init):
    features = alexnet().features
    shape, seen = (3, 227, 227), {}
    for name, layer in features.named_children():
        shape = layer.output_shape(shape)
        seen[name] = shape
    assert seen["pool1"] == (96, 27, 27) and seen["conv2"] == (256, 27, 27)
    assert seen["pool2"] == (256, 13, 13) and seen["conv5"] == (256, 13, 13)
    assert seen["pool5"] == (256, 6, 6)
    assert features.conv2.params["weight"].shape == (256, 48, 5, 5)   # one column's 48 maps


def test_parameter_counts(lazy_init):
    assert alexnet().num_params() == 60_965_224                # Caffe bvlc_alexnet
    assert alexnet_torchvision().num_params() == 61_100_840    # torchvision model card


def test_torchvision_variant_matches_torch(rng):
    net = alexnet_torchvision(num_classes=10, seed=1).astype(np.float64)
    ref = copy_into_torch(net, lambda: AlexNet(10))
    x = rng.standard_normal((1, 3, 224, 224))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_lecture_variant_matches_torch_with_groups_and_lrn(rng):
    net = alexnet(num_classes=10, seed=2).astype(np.float64)
    ref = copy_into_torch(net, lambda: CaffeAlexNet(10))
    x = rng.standard_normal((1, 3, 227, 227))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_training_step():
    # the lecture variant (LRN, groups); the torchvision one uses a subset of its layer types
    net = alexnet(num_classes=4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227)).astype(np.float32)
    loss, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), np.array([0, 3]))
    assert np.isfinite(loss)
    assert net.backward(dscores).shape == x.shape
    assert all(g is not None and np.isfinite(g).all() for _, _, g in net.named_params())


def test_unknown_variant():
    with pytest.raises(vn.ConfigError, match="torchvision"):
        alexnet(variant="caffe")
