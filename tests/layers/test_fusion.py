"""Fused steps give the unfused values: conv + bias + ReLU in one pass (training and
inference), conv + batch norm (+ ReLU) folded into the conv's epilogue at inference,
following every change of the batch norm, never hidden from a hook. Oracle: PyTorch
float64 on the same weights."""

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.errors import StateError
from volnet.functional import conv_choice, weight_cache
from volnet.functional import norm as norm_kernels
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


@pytest.fixture(params=["im2col", "winograd"], autouse=True)
def kernels(request, monkeypatch):
    """Both epilogues: after the matrix products and inside the Winograd output transform."""
    winograd = request.param == "winograd"
    monkeypatch.setattr(conv_choice, "WINOGRAD", winograd)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES_DW", 1)
    monkeypatch.setattr(weight_cache, "BUDGET_BYTES", 64 << 20)
    weight_cache.clear()
    with backend.use_kernels("numba"):
        yield request.param


def _net(seed=0):
    rng = np.random.default_rng(seed)
    net = vn.Sequential(vn.Conv2d(8, 16, 3, padding=1, rng=seed), vn.ReLU(),
                        vn.Conv2d(16, 16, 3, padding=1, bias=False, rng=seed + 1),
                        vn.BatchNorm2d(16), vn.ReLU(),
                        vn.Conv2d(16, 16, 3, padding=1, rng=seed + 2), vn.BatchNorm2d(16))
    for bn in (net[3], net[6]):        # statistics and affine parameters away from 0 and 1
        bn.params["weight"][...] = rng.uniform(0.5, 2.0, 16)
        bn.params["bias"][...] = rng.standard_normal(16)
        bn.buffers["running_mean"][...] = rng.standard_normal(16)
        bn.buffers["running_var"][...] = rng.uniform(0.2, 3.0, 16)
    return net


def _torch(net):
    mods = []
    for layer in net:
        if isinstance(layer, vn.Conv2d):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1,
                                bias="bias" in layer.params).double()
        elif isinstance(layer, vn.BatchNorm2d):
            m = torch.nn.BatchNorm2d(layer.num_features).double()
            m.running_mean.copy_(torch.tensor(layer.buffers["running_mean"]))
            m.running_var.copy_(torch.tensor(layer.buffers["running_var"]))
        else:
            m = torch.nn.ReLU()
        for key, value in layer.params.items():
            getattr(m, key).data.copy_(torch.tensor(value, dtype=torch.float64))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def _x(n=2):
    return np.random.default_rng(5).standard_normal((n, 8, 12, 12)).astype(np.float32)


def test_inference_folds_batch_norm_and_matches_torch(monkeypatch):
    net, x = _net(), _x()
    with monkeypatch.context() as m:        # folded: the batch norm kernel never runs
        m.setattr(norm_kernels, "batchnorm_forward_eval", None)
        out = net.forward(x)
    want = _torch(net).eval()(torch.tensor(x, dtype=torch.float64)).detach().numpy()
    np.testing.assert_allclose(out, want, rtol=2e-4, atol=2e-4)
    with backend.use_kernels("numpy"):                               # the unfused reference
        np.testing.assert_allclose(net.forward(x), out, rtol=2e-4, atol=2e-4)
    assert net[3]._cache is None and net[6]._cache is None          # folded layers keep nothing


def test_fold_follows_every_change_of_the_batch_norm():
    net, x = _net(), _x()
    net.forward(x)
    net.forward(x, training=True)                 # running statistics move, in place
    after_stats = net.forward(x)
    tnet = _torch(net).eval()
    np.testing.assert_allclose(after_stats, tnet(torch.tensor(x, dtype=torch.float64))
                               .detach().numpy(), rtol=2e-4, atol=2e-4)
    net[6].params["weight"][0] *= -1.0            # a user's in-place edit of gamma
    edited = net.forward(x)
    assert not np.allclose(edited[:, 0], after_stats[:, 0])
    np.testing.assert_allclose(edited[:, 1:], after_stats[:, 1:], rtol=1e-5, atol=1e-5)
    net.load_state_dict(_net(seed=9).state_dict())
    np.testing.assert_allclose(net.forward(x), _torch(net).eval()(
        torch.tensor(x, dtype=torch.float64)).detach().numpy(), rtol=2e-4, atol=2e-4)


def test_training_conv_relu_fused_gradients_match_torch():
    net, x = _net(), _x()
    out = net.forward(x, training=True)
    assert net[0]._cache.mask is not None                # conv 0 ran with its ReLU fused
    dout = np.random.default_rng(6).standard_normal(out.shape).astype(np.float32)
    dx = net.backward(dout)
    tnet = _torch(net).train()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = tnet(xt)
    yt.backward(torch.tensor(dout, dtype=torch.float64))
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-3)
    for layer, m in zip(net, tnet):
        for key in layer.params:
            np.testing.assert_allclose(layer.grads[key], getattr(m, key).grad.numpy(),
                                       rtol=1e-3, atol=1e-3)


def test_a_hook_sees_every_layer_unfused():
    net, x = _net(), _x()
    fused = net.forward(x)
    seen = []
    with net[4].register_forward_hook(lambda layer, i, o, t: seen.append(type(layer))):
        out = net.forward(x)
    assert seen == [vn.ReLU]                     # the ReLU after the batch norm ran itself
    np.testing.assert_allclose(out, fused, rtol=2e-4, atol=2e-4)
    with vn.layers.hooks.register_forward_hook(lambda layer, i, o, t: seen.append(type(layer))):
        net.forward(x, training=True)
    assert seen[1:] == [type(layer) for layer in net] + [vn.Sequential]


def test_fused_conv_backward_must_match_its_forward():
    conv = vn.Conv2d(8, 4, 3, padding=1, rng=0)
    out = conv.forward_relu(_x(), training=True)
    assert (out >= 0).all()
    with pytest.raises(StateError, match="backward_relu"):
        conv.backward(np.ones_like(out))
    conv.forward(_x(), training=True)
    with pytest.raises(StateError, match="call backward"):
        conv.backward_relu(np.ones_like(out))
