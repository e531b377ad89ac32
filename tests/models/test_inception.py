"""Inception v3 and v4: counts, keys, factorised modules, eval parity, a training step."""

import numpy as np
import torch
from batch_norm_stats import randomise_norm_stats
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import Inception3, InceptionAux, InceptionV4

import volnet as vn
from volnet.models.inception import inception_v3
from volnet.models.inception_v4 import inception_c, inception_v4, reduction_b


def test_v3_parameter_count_and_keys(lazy_init):
    net = inception_v3()
    assert net.num_params() == 27_161_264                        # torchvision, with AuxLogits
    assert sum(p.numel() for p in Inception3().parameters()) == 27_161_264
    keys = set(net.state_dict())
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.conv.weight",
                "Mixed_5b.branch_pool.bn.running_var", "Mixed_6b.branch7x7_2.conv.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight", "AuxLogits.conv1.conv.weight",
                "AuxLogits.fc.weight", "fc.bias"):
        assert key in keys
    assert net.Mixed_6b.state_dict()["branch7x7_2.conv.weight"].shape == (128, 128, 1, 7)


def test_v3_volumes(lazy_init):
    table = vn.summary(inception_v3(), (3, 299, 299))
    out = {r["name"]: r["output"] for r in table.rows if r["type"] == "FlatConcat"}
    assert out["Mixed_5d"] == "35x35x288" and out["Mixed_6e"] == "17x17x768"
    assert out["Mixed_7c"] == "8x8x2048"
    assert round(table.totals["macs"] / 1e9, 2) == 5.71          # torchvision: 5.71 GFLOPS


def test_v3_eval_forward_matches_torch(rng):
    net = inception_v3(num_classes=10, seed=7).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: Inception3(10))
    x = rng.standard_normal((1, 3, 75, 75))                      # the smallest size it accepts
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x)[0], rtol=1e-7, atol=1e-9)


def test_v3_aux_head_matches_torch(rng):
    net = inception_v3(num_classes=10, seed=8).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = InceptionAux(768, 10).double()
    ref.load_state_dict({k[len("AuxLogits."):]: torch.from_numpy(v)
                         for k, v in net.state_dict().items() if k.startswith("AuxLogits.")})
    x = rng.standard_normal((1, 768, 17, 17))
    np.testing.assert_allclose(net.AuxLogits.head.forward(x), torch_forward(ref.eval(), x),
                               rtol=1e-7, atol=1e-9)


def test_v3_training_step():
    # the aux head needs the 17x17 grid of a 299 input; at 75x75 train without it
    net = inception_v3(num_classes=4, seed=0, aux_logits=False)
    x = np.random.default_rng(0).standard_normal((2, 3, 75, 75)).astype(np.float32)
    loss, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), np.array([1, 2]))
    assert np.isfinite(loss)
    assert net.backward(dscores).shape == x.shape
    assert all(g is not None and np.isfinite(g).all() for _, _, g in net.named_params())


def test_v4_parameter_count_and_stages(lazy_init):
    net = inception_v4()
    # 42,679,816: the reference port (Cadene's pretrainedmodels, timm inception_v4), "42.7 M"
    assert net.num_params() == sum(p.numel() for p in InceptionV4().parameters()) == 42_679_816
    table = vn.summary(net, (3, 299, 299))
    out = {r["name"]: r["output"] for r in table.rows}
    assert out["features.5"] == "35x35x384"        # stem (paper Fig. 3)
    assert out["features.10"] == "17x17x1024"      # Reduction-A (Fig. 7)
    assert out["features.18"] == "8x8x1536"        # Reduction-B (Fig. 8)
    assert out["features.21"] == "8x8x1536"


def test_v4_eval_forward_matches_torch(rng):
    net = inception_v4(num_classes=10, seed=9).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: InceptionV4(10))
    x = rng.standard_normal((1, 3, 75, 75))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x), rtol=1e-7, atol=1e-9)


def test_v4_blocks_train_a_step():
    # the whole v4 is the zoo's most expensive net; its last stages (Reduction-B, then
    # Inception-C with its split 1x3/3x1 outputs and uncounted-padding average pool) train here
    # on a small grid, and the forward pass of the whole net is checked against torch above
    rng = np.random.default_rng(0)
    net = vn.Sequential(reduction_b(rng), inception_c(rng))
    x = rng.standard_normal((2, 1024, 7, 7)).astype(np.float32)
    out = net.forward(x, training=True)
    assert out.shape == (2, 1536, 3, 3)
    assert net.backward(np.ones_like(out)).shape == x.shape
    assert all(g is not None and np.isfinite(g).all() for _, _, g in net.named_params())
