"""Yu & Koltun's context module: Table 1's fields, identity init, torch parity, training."""

from collections import OrderedDict

import numpy as np
import pytest
from torch import nn
from zoo_helpers import copy_into_torch, torch_forward

import volnet as vn
from volnet.models.context import DILATIONS, NAMES, context_module


def test_receptive_fields_follow_table_1():
    table = vn.summary(context_module(num_classes=21), (21, 66, 66))
    fields = [r["receptive_field"][0] for r in table.rows if r["type"] == "Conv2d"]
    assert fields == [3, 5, 9, 17, 33, 65, 67, 67]
    assert all(r["output"] == "66x66x21" for r in table.rows if r["type"] == "Conv2d")
    dilations = [r["dilation"] for r in table.rows if r["type"] == "Conv2d"]
    assert dilations[:7] == [(d, d) for d in DILATIONS]


def test_parameter_counts():
    c = 21
    basic = 7 * (c * c * 9 + c) + (c * c + c)
    assert context_module(num_classes=c).num_params() == basic == 28_392
    widths = [c] + [c * m for m in (2, 2, 4, 8, 16, 32, 32)] + [c]
    large = sum(a * b * 9 + b for a, b in zip(widths[:7], widths[1:8])) + widths[7] * c + c
    assert context_module(num_classes=c, large=True).num_params() == large


@pytest.mark.parametrize("large", [False, True])
def test_identity_initialisation_passes_input_through(large, rng):
    x = rng.random((2, 5, 24, 24))                 # non-negative, as score maps after RELU
    net = context_module(num_classes=5, large=large).astype(np.float64)
    np.testing.assert_allclose(net.forward(x), x, rtol=1e-12, atol=1e-12)


def test_forward_matches_torch(rng):
    net = context_module(num_classes=3, in_channels=4, init="he", seed=1).astype(np.float64)
    layers = OrderedDict()
    cin = 4
    for i, (name, d) in enumerate(zip(NAMES, DILATIONS)):
        layers[name] = nn.Conv2d(cin, 3, 3, padding=d, dilation=d)
        layers[f"ctx_relu{i + 1}"] = nn.ReLU()
        cin = 3
    layers[NAMES[-1]] = nn.Conv2d(3, 3, 1)
    ref = copy_into_torch(net, lambda: nn.Sequential(layers))
    x = rng.standard_normal((2, 4, 40, 40))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_training_step(rng):
    net = context_module(num_classes=3, init="he", seed=2)
    x = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    out = net.forward(x, training=True)
    assert net.backward(np.ones_like(out)).shape == x.shape
    assert all(g is not None for _, _, g in net.named_params())


def test_bad_init_is_a_config_error():
    with pytest.raises(vn.ConfigError, match="identity"):
        context_module(init="xavier")
