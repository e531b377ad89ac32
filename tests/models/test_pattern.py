"""The lecture's INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC builder."""

import numpy as np
import pytest
from torch import nn
from zoo_helpers import copy_into_torch, torch_forward

import volnet as vn
from volnet.models.pattern import pattern

TOKENS = {"Conv2d": "CONV", "ReLU": "RELU", "MaxPool2d": "POOL", "Linear": "FC"}


def lecture_string(net) -> str:
    names = [TOKENS[type(layer).__name__] for _, layer in net.named_layers()
             if type(layer).__name__ in TOKENS]
    return " -> ".join(["INPUT"] + names)


@pytest.mark.parametrize("args, kwargs, expected", [
    ((0, 0, 0), {}, "INPUT -> FC"),
    ((1, 1, 0), {"pool": False}, "INPUT -> CONV -> RELU -> FC"),
    ((1, 2, 1), {}, "INPUT -> CONV -> RELU -> POOL -> CONV -> RELU -> POOL -> FC -> RELU -> FC"),
    ((2, 3, 2), {}, "INPUT" + " -> CONV -> RELU -> CONV -> RELU -> POOL" * 3
     + " -> FC -> RELU" * 2 + " -> FC"),
])
def test_lecture_examples(args, kwargs, expected):
    net = pattern(*args, widths=4, fc_widths=8, **kwargs)
    assert lecture_string(net) == expected
    assert net.output_shape((3, 32, 32)) == (10,)


def test_volumes_and_first_fc_size():
    net = pattern(n=2, m=3, k=2, widths=(8, 16, 32), fc_widths=(64, 32), num_classes=7)
    table = vn.summary(net, (3, 32, 32))
    pools = [r["output"] for r in table.rows if r["type"] == "MaxPool2d"]
    assert pools == ["16x16x8", "8x8x16", "4x4x32"]
    assert net.classifier[0].in_features == 4 * 4 * 32
    assert net.output_shape((3, 32, 32)) == (7,)


def test_forward_matches_torch(rng):
    net = pattern(n=1, m=2, k=1, widths=(4, 6), fc_widths=5, input_shape=(2, 12, 12),
                  num_classes=3, seed=1).astype(np.float64)
    torch_net = nn.Sequential()
    torch_net.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                       nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    torch_net.flatten = nn.Flatten()
    torch_net.classifier = nn.Sequential(nn.Linear(54, 5), nn.ReLU(), nn.Linear(5, 3))
    ref = copy_into_torch(net, lambda: torch_net)
    x = rng.standard_normal((2, 2, 12, 12))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_training_step(rng):
    net = pattern(n=2, m=2, k=1, widths=(4, 8), fc_widths=16)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    loss, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), np.arange(4))
    assert np.isfinite(loss) and net.backward(dscores).shape == x.shape


def test_bad_configurations():
    with pytest.raises(vn.ConfigError, match="widths must have 3 entries"):
        pattern(m=3, widths=(8, 16))
    with pytest.raises(vn.ConfigError, match="pool a 1x1 volume"):
        pattern(n=1, m=6, widths=4, input_shape=(3, 32, 32))
    with pytest.raises(vn.ConfigError, match="n must be an int"):
        pattern(n=-1)
