"""All-CNN-C: the paper's parameter count and volumes, eval parity with a torch.nn model
written from the paper's table, and a training step's loss and gradients against torch's."""

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from zoo_helpers import copy_into_torch, torch_forward

import volnet as vn
from volnet.models.all_cnn import all_cnn_c


def torch_all_cnn_c(num_classes=10, drop=(0.2, 0.5)):
    """Springenberg et al. 2015, Table 2 (All-CNN-C), with volnet's layer names."""
    layers, cin = [("drop0", nn.Dropout(drop[0]))], 3
    for i, (out, k, s, p) in enumerate([(96, 3, 1, 1), (96, 3, 1, 1), (96, 3, 2, 1),
                                        (192, 3, 1, 1), (192, 3, 1, 1), (192, 3, 2, 1),
                                        (192, 3, 1, 0), (192, 1, 1, 0), (num_classes, 1, 1, 0)]):
        layers += [(f"conv{i + 1}", nn.Conv2d(cin, out, k, s, p)), (f"relu{i + 1}", nn.ReLU())]
        if i in (2, 5):
            layers.append((f"drop{i + 1}", nn.Dropout(drop[1])))
        cin = out
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    return nn.Sequential(OrderedDict(layers))


def test_parameter_count_is_the_papers_and_torchs():
    net = all_cnn_c()
    # the paper's table: 1.37 M; every weight and bias of the nine convolutions counted
    assert net.num_params() == sum(p.numel() for p in torch_all_cnn_c().parameters()) == 1_369_738
    assert round(net.num_params() / 1e6, 2) == 1.37
    assert list(net.state_dict()) == list(torch_all_cnn_c().state_dict())


def test_volumes_without_pooling():
    table = vn.summary(all_cnn_c(), (3, 32, 32))
    out = {r["name"]: r["output"] for r in table.rows}
    assert (out["conv3"], out["conv6"], out["conv7"], out["conv9"]) == (
        "16x16x96", "8x8x192", "6x6x192", "6x6x10")   # "global averaging over 6x6"
    assert not any("Pool2d" in r["type"] and r["type"] != "GlobalAvgPool2d" for r in table.rows)
    assert vn.receptive_field(all_cnn_c(), (3, 32, 32), layer="conv9").size == (27, 27)


def test_eval_forward_matches_torch(rng):
    net = all_cnn_c(num_classes=10, seed=4).astype(np.float64)
    ref = copy_into_torch(net, lambda: torch_all_cnn_c(10))
    x = rng.standard_normal((2, 3, 32, 32))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-9, atol=1e-12)


def test_training_step_matches_torch_gradients(rng):
    # dropout off (its masks are drawn differently): the backward of every conv is compared
    net = all_cnn_c(num_classes=10, seed=5, drop_prob=(0.0, 0.0)).astype(np.float64)
    ref = copy_into_torch(net, lambda: torch_all_cnn_c(10, (0.0, 0.0))).train()
    x, y = rng.standard_normal((2, 3, 20, 20)), np.array([3, 7])
    loss, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), y)
    net.backward(dscores)
    ref_loss = nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y))
    ref_loss.backward()
    assert np.isclose(loss, ref_loss.item(), rtol=1e-10)
    grads = {name: g for name, _, g in net.named_params()}
    for name, param in ref.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-7, atol=1e-12)
