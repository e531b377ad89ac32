"""Inference at batch 1 on small maps: im2col with its product split by filters over the block
threads, each thread running its rows' product and their epilogue (folded batch norm scale
and bias, residual sum, ReLU) once (conv_gemm._forward_by_filters), and the rule that picks
it (conv_choice.split_fits). References: PyTorch in float64, and the NumPy reference path
(VOLNET_KERNELS=numpy: unfused layers, no threads)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_reference import conv_epilogue

from volnet.functional import conv_choice, conv_gemm
from volnet.functional.conv import conv2d_forward
from volnet.runtime import backend, block_threads

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


@pytest.fixture(autouse=True)
def outer_off(monkeypatch):
    """The im2col split by filters runs where the outer kernel is off (VOLNET_OUTER=0); with it on,
    inference gives these layers to it (tests/functional/test_outer_conv.py)."""
    monkeypatch.setattr(conv_choice, "OUTER", False)


@pytest.fixture
def counted_runs(monkeypatch):
    """The ``count`` of every block_threads.run call."""
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    return counts


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _torch_fused(x, w, b, scale, residual, stride, padding, dilation, relu=True):
    return conv_epilogue(x, w, b, scale, residual, relu, stride, padding, dilation)


# (C, F, H, kernel, stride, padding, dilation): odd filter counts (not multiples of 2 or
# 16), odd channels, 7x7 and 14x14 maps, stride 2, dilation 2, a 5x5 kernel, padding 0
CASES = [(13, 37, 7, 3, 1, 1, 1), (24, 33, 14, 3, 1, 1, 1), (9, 17, 14, 3, 2, 1, 1),
         (11, 19, 9, 3, 1, 2, 2), (6, 35, 7, 5, 1, 2, 1), (8, 3, 7, 3, 1, 0, 1)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_batch1_split_conv_with_fused_epilogue_matches_torch(two_threads, monkeypatch,
                                                             counted_runs, case, with_residual):
    c, f, h, k, s, p, d = case
    rng = np.random.default_rng(c * f + h)
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, f).astype(np.float32)
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    residual = (rng.standard_normal((1, f, ho, ho)).astype(np.float32) if with_residual
                else None)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)     # these small layers split too
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, (s, s), (p, p), (d, d), keep_cache=False, relu=True,
                                scale=scale,
                                residual=None if residual is None else residual.copy())
        kernel = conv_choice.plan(x.shape, w.shape, (s, s), (p, p), (d, d), 1, (ho, ho),
                                  np.float32).forward
    assert kernel == "im2col"
    assert counts_split(counted_runs, two_threads)
    ref = _torch_fused(x, w, b, scale, residual, s, p, d)
    assert _rel(out, ref) < 1e-5            # im2col's float32 class, as test_block_threads


def counts_split(counts, threads):
    """The one product went on ``threads`` threads (the unsplit path makes no run call of
    more than one block at batch 1)."""
    return counts == [threads]


def test_split_conv_equals_the_numpy_reference_path_in_a_residual_block(two_threads,
                                                                        monkeypatch):
    import volnet as vn
    from volnet.layers import Residual, Sequential

    def block():
        rng = np.random.default_rng(5)
        body = Sequential(vn.Conv2d(21, 21, 3, padding=1, bias=False, rng=1),
                          vn.BatchNorm2d(21), vn.ReLU(),
                          vn.Conv2d(21, 21, 3, padding=1, bias=False, rng=2),
                          vn.BatchNorm2d(21))
        for layer in body:
            if "running_mean" in layer.buffers:
                layer.buffers["running_mean"][...] = rng.normal(0, 0.2, 21)
                layer.buffers["running_var"][...] = rng.uniform(0.5, 1.5, 21)
                layer.params["weight"][...] = rng.uniform(0.5, 1.5, 21)
                layer.params["bias"][...] = rng.normal(0, 0.2, 21)
        return Residual(body, activation=vn.ReLU())

    net = block()
    x = np.random.default_rng(0).standard_normal((1, 21, 14, 14)).astype(np.float32)
    with backend.use_kernels("numpy"):
        want = net.forward(x)                    # separate layers, one thread, no plan
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    with backend.use_kernels("numba"):
        outs = [net.forward(x) for _ in range(3)]     # unplanned, then planned twice
    for out in outs:
        assert _rel(out, want) < 1e-5
    assert counts.count(two_threads) == 6         # both convs split on every call


def test_the_rule_picks_the_split_at_batch_1_on_small_maps_only(monkeypatch):
    monkeypatch.setattr(block_threads, "workers", lambda: 2)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 1 << 11)  # 14x14: Winograd

    def forward(n, c, f, h, groups=1, dtype=np.float32, training=False, stride=1):
        ho = (h - 1) // stride + 1
        with backend.use_kernels("numba"):
            return conv_choice.plan((n, c, h, h), (f, c // groups, 3, 3), (stride, stride),
                                    (1, 1), (1, 1), groups, (ho, ho), dtype,
                                    training=training).forward

    assert forward(1, 256, 256, 14) == "im2col"      # Winograd otherwise
    assert forward(1, 128, 256, 28, stride=2) == "im2col"   # direct otherwise
    assert forward(1, 512, 512, 7) == "im2col"
    assert forward(1, 128, 128, 28) == "winograd4"   # 28x28: Winograd stays
    assert forward(1, 64, 64, 56) == "winograd4"
    assert forward(2, 256, 256, 14) == "winograd4"   # a sample per thread: blocks, as before
    assert forward(1, 256, 256, 14, groups=2) != "im2col"   # the split is groups 1 only
    assert forward(1, 160, 160, 14) == "im2col"
    assert forward(1, 160, 160, 14, training=True) == "direct"   # training's rule unchanged
    assert forward(1, 16, 16, 14) == "direct"        # too small a product to split
    monkeypatch.setattr(block_threads, "workers", lambda: 1)
    assert forward(1, 256, 256, 14) == "winograd4"   # one thread: nothing to split over


def test_grouped_batch1_conv_is_not_split_and_matches_torch(two_threads, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 16, 7, 7)).astype(np.float32)
    w = rng.standard_normal((22, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(22).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, 22).astype(np.float32)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    monkeypatch.setattr(conv_choice, "DIRECT", False)        # im2col, grouped
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 2, keep_cache=False,
                                relu=True, scale=scale)
    t64 = lambda a: torch.tensor(a, dtype=torch.float64)     # noqa: E731
    ref = torch.relu(torch.nn.functional.conv2d(t64(x), t64(w), None, 1, 1, 1, 2)
                     * t64(scale)[:, None, None] + t64(b)[:, None, None]).numpy()
    assert _rel(out, ref) < 1e-5
    assert not conv_choice.split_fits(1, w.shape, 2, (7, 7), two_threads)   # groups 1 only


def test_float64_batch1_split_stays_exact(two_threads, monkeypatch, counted_runs):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 19, 7, 7))
    w = rng.standard_normal((29, 19, 3, 3))
    b = rng.standard_normal(29)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, (1, 1), (1, 1), keep_cache=False, relu=True)
    assert out.dtype == np.float64
    ref = _torch_fused(x, w, b, np.ones(29), None, 1, 1, 1)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    assert counted_runs == [two_threads]


@pytest.mark.parametrize("f, count, want", [(512, 2, [0, 256, 512]), (37, 2, [0, 16, 37]),
                                            (17, 2, [0, 8, 17]), (1, 1, [0, 1]),
                                            (100, 3, [0, 32, 64, 100])])
def test_filter_edges_cover_every_filter_once(f, count, want):
    assert conv_gemm.filter_edges(f, count) == want


def test_first_split_call_in_a_fresh_process_imports_its_epilogue_once(two_threads):
    # the two threads' first epilogues import the compiled activation module at the same
    # time; the second must wait for that import, not see a module without its kernels
    code = """
import numba, numpy as np
numba.set_num_threads(2)
from volnet.functional.conv import conv2d_forward
from volnet.runtime import backend, block_threads
block_threads.SPLIT_MIN = 1
rng = np.random.default_rng(0)
x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
with backend.use_kernels("numba"):
    out, _ = conv2d_forward(x, w, np.ones(64, np.float32), (1, 1), (1, 1), keep_cache=False,
                            relu=True, scale=np.ones(64, np.float32))
print(float(out.min()) >= 0.0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"
