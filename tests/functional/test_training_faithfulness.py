"""Training in float32 is as faithful as PyTorch's float32: the adversarial replay.

A small CIFAR-style network trains 50 SGD steps at lr 0.02, momentum 0.9, on random data
(benchmarks/training_faithfulness.py): a sensitive run whose loss jumps above 10 before
falling, so any error a kernel adds is amplified. volnet float32's final parameters must
stay within 3x PyTorch float32's divergence from the float64 run (which volnet float64
and PyTorch float64 agree on to ~1e-15). With the forward pass by Winograd F(4x4) this
diverged by 7.4e-3, ~17000x PyTorch's; with dx and dw by F(4x4), 29x and 101x on two
seeds of 24 (benchmarks/README.md section 34), so training runs the three passes by
exact kernels (conv_choice.plan). The seeds are 0 (the original replay), 10 (the exact
kernels' worst ratio, 1.9x) and 13 (Winograd dx and dw's 101x); the kernels that ran are
counted, so the test cannot silently stop testing the plan.
"""

import functools

import numpy as np
import pytest
import torch

from benchmarks import training_faithfulness as replay
from volnet.functional import conv_choice
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


def _training_plan(n, c, f, h):
    return conv_choice.plan((n, c, h, h), (f, c, 3, 3), (1, 1), (1, 1), (1, 1), 1, (h, h),
                            np.float32, training=True)


@functools.lru_cache(maxsize=None)
def _float64_run(widths, seed):
    """volnet's float64 final parameters (the reference trajectory; shared by the cases)."""
    with backend.use_kernels("numba"):
        return replay.volnet_run(widths, seed, np.float64)[0]


def _assert_faithful(widths, seed):
    """Replay ``seed`` on ``widths``: volnet float32 within 3x PyTorch float32's divergence
    from volnet float64; returns the Winograd backward calls counted in the float32 run."""
    with backend.use_kernels("numba"):
        with replay.count_winograd() as counts:
            ours32, losses = replay.volnet_run(widths, seed, np.float32)
    ours64 = _float64_run(widths, seed)
    theirs32 = replay.torch_run(widths, seed, torch.float32)
    assert max(losses) > 10, "the replay must be the sensitive run"
    ours, theirs = replay.rel(ours32, ours64), replay.rel(theirs32, ours64)
    print(f"seed {seed}: divergence from float64: volnet {ours:.2e}, torch {theirs:.2e}")
    assert ours <= 3 * theirs, (ours, theirs)
    return counts


def test_float64_replays_agree_with_torch():
    ours64 = _float64_run(replay.WIDTHS["narrow"], 0)
    theirs64 = replay.torch_run(replay.WIDTHS["narrow"], 0, torch.float64)
    assert replay.rel(ours64, theirs64) < 1e-10                 # one float64 trajectory


# (seed, direct kernel on, the training plan of conv2 and conv3: forward, dx, dw)
CASES = [(0, True, ("direct", "direct", "direct")), (10, True, ("direct", "direct", "direct")),
         (13, True, ("direct", "direct", "direct")),
         (13, False, ("im2col", "im2col (flipped filters)", "im2col"))]


@pytest.mark.parametrize("seed, direct, kernels", CASES)
def test_adversarial_replay_float32_as_faithful_as_torch(monkeypatch, seed, direct, kernels):
    """The narrow net with Winograd's thresholds lowered to take every 3x3 layer: training
    still runs none of it, and stays within 3x PyTorch's divergence."""
    for key, value in replay.settings_constants("narrow", "both").items():
        monkeypatch.setattr(conv_choice, key, value)
    monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", False)     # the default
    monkeypatch.setattr(conv_choice, "DIRECT", direct)
    with backend.use_kernels("numba"):
        for c, f, h in ((16, 32, 32), (32, 32, 16)):            # conv2 and conv3
            plan = _training_plan(replay.BATCH, c, f, h)
            assert (plan.forward, plan.input_grad, plan.weight_grad) == kernels
            inference = conv_choice.plan((replay.BATCH, c, h, h), (f, c, 3, 3), (1, 1), (1, 1),
                                         (1, 1), 1, (h, h), np.float32)
            assert inference.forward == "winograd4"
    counts = _assert_faithful(replay.WIDTHS["narrow"], seed)
    assert counts == {"dx": 0, "dw": 0}


def test_wide_replay_runs_the_plans_exact_backward(monkeypatch):
    """The 64-channel net, thresholds untouched: the plan would give conv2's dx and dw to
    Winograd (it does with WINOGRAD_TRAINING), and gives them to the direct kernel."""
    monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", False)     # the default
    with backend.use_kernels("numba"):
        n, c, f, h = replay.BATCH, 64, 64, 32
        assert (_training_plan(n, c, f, h).input_grad,
                _training_plan(n, c, f, h).weight_grad) == ("direct", "direct")
        monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", True)
        opted_in = _training_plan(n, c, f, h)
        monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", False)
        assert (opted_in.forward, opted_in.input_grad, opted_in.weight_grad) == (
            "direct", "winograd4", "winograd4")
    assert _assert_faithful(replay.WIDTHS["wide"], 1) == {"dx": 0, "dw": 0}
