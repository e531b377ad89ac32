"""Training in float32 is as faithful as PyTorch's float32: the adversarial replay.

A small CIFAR-style network whose conv2 and conv3 take Winograd (forced by the
thresholds) trains 50 SGD steps at lr 0.02, momentum 0.9, on random data: a sensitive
run whose loss jumps above 10 before falling, so any error a kernel adds is amplified.
volnet float32's final parameters must stay within 3x PyTorch float32's divergence from
the float64 run (which volnet float64 and PyTorch float64 agree on to ~1e-15). With the
forward pass by Winograd F(4x4) this diverged by 7.4e-3, ~17000x PyTorch's
(conv_choice.plan: training forwards run the direct kernel, or im2col with it off; dx
and dw keep Winograd where the direct kernel does not take them).
"""

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.functional import conv_choice
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

STEPS, BATCH = 50, 16


def _net(dtype):
    net = vn.Sequential(vn.Conv2d(3, 16, 3, padding=1, rng=0), vn.ReLU(),
                        vn.Conv2d(16, 32, 3, padding=1, rng=1), vn.ReLU(), vn.MaxPool2d(2),
                        vn.Conv2d(32, 32, 3, padding=1, rng=2), vn.ReLU(), vn.MaxPool2d(2),
                        vn.Flatten(), vn.Linear(32 * 8 * 8, 10, rng=3))
    return net.astype(dtype)


def _data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((STEPS, BATCH, 3, 32, 32)),
            rng.integers(0, 10, (STEPS, BATCH)))


def _volnet_run(dtype):
    net, (xs, ys) = _net(dtype), _data()
    opt = vn.SGD(net, lr=0.02, momentum=0.9)
    losses = []
    for x, y in zip(xs, ys):
        loss, dout = vn.functional.softmax_cross_entropy(
            net.forward(x.astype(dtype), training=True), y)
        losses.append(float(loss))
        net.backward(dout, input_grad=False)
        opt.step()
    return np.concatenate([p.ravel().astype(np.float64) for _, p, _ in net.named_params()]), losses


def _torch_run(dtype):
    net = _net(np.float64)
    mods = []
    for layer in net:
        if isinstance(layer, vn.Conv2d):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
        elif isinstance(layer, vn.Linear):
            m = torch.nn.Linear(*reversed(layer.params["weight"].shape))
        else:
            m = {vn.ReLU: torch.nn.ReLU, vn.MaxPool2d: lambda: torch.nn.MaxPool2d(2),
                 vn.Flatten: torch.nn.Flatten}[type(layer)]()
        for key, value in layer.params.items():
            getattr(m, key).data = torch.tensor(value)
        mods.append(m)
    tnet = torch.nn.Sequential(*mods).to(dtype)
    opt = torch.optim.SGD(tnet.parameters(), lr=0.02, momentum=0.9)
    for x, y in zip(*_data()):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x, dtype=dtype)),
                                          torch.tensor(y)).backward()
        opt.step()
    return np.concatenate([p.detach().double().numpy().ravel() for p in tnet.parameters()])


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# (direct kernel on, the training plan of conv2 and conv3: forward, dx, dw)
PLANS = [(True, ("direct", "direct", "direct")), (False, ("im2col", "winograd4", "winograd4"))]


@pytest.mark.parametrize("direct, kernels", PLANS)
def test_adversarial_replay_float32_as_faithful_as_torch(monkeypatch, direct, kernels):
    monkeypatch.setattr(conv_choice, "DIRECT", direct)
    monkeypatch.setattr(conv_choice, "WINOGRAD", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES_DW", 1)
    with backend.use_kernels("numba"):
        for c, f, h in ((16, 32, 32), (32, 32, 16)):            # conv2 and conv3
            plan = conv_choice.plan((BATCH, c, h, h), (f, c, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                    (h, h), np.float32, training=True)
            assert (plan.forward, plan.input_grad, plan.weight_grad) == kernels
            if not direct:
                assert conv_choice.plan((BATCH, c, h, h), (f, c, 3, 3), (1, 1), (1, 1), (1, 1),
                                        1, (h, h), np.float32).forward == "winograd4"
        ours32, losses = _volnet_run(np.float32)
    ours64, _ = _volnet_run(np.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theirs64, theirs32 = _torch_run(torch.float64), _torch_run(torch.float32)
    finally:
        torch.set_num_threads(threads)
    assert max(losses) > 10, "the replay must be the sensitive run"
    assert _rel(ours64, theirs64) < 1e-10                    # one float64 trajectory
    print(f"divergence from float64: volnet {_rel(ours32, ours64):.2e}, "
          f"torch {_rel(theirs32, theirs64):.2e}")
    assert _rel(ours32, ours64) <= 3 * _rel(theirs32, theirs64), (
        _rel(ours32, ours64), _rel(theirs32, theirs64))
