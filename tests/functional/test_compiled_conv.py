"""Compiled conv kernels (Winograd, depthwise) against the NumPy reference path and PyTorch.

Shapes are drawn by Hypothesis: odd sizes, batch 1, padding 0-2, dilation 1-2. The
Winograd size threshold is lowered so small maps take that path. float32 tolerances
come from the error table in benchmarks/README.md (python -m benchmarks.winograd_error):
over every 3x3 layer of vgg16, resnet18/50, googlenet and inception_v3, the worst
normwise error against float64 direct convolution (forward, dx or dw) is 1.4e-5 for
F(4x4,3x3) and 8.5e-7 for float32 im2col. The bound below is about 6x F(4x4)'s, for
the drawn shapes' other statistics;
the direct depthwise kernel sums at most 25 products per output, like im2col.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volnet.functional import conv_choice, conv_gemm
from volnet.runtime import backend
from volnet.functional.compiled import winograd
from volnet.functional.conv import conv2d_backward, conv2d_forward

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = {"winograd4": 1e-4, "depthwise": 1e-5}


def _rel(a, b):
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(np.asarray(a, np.float64) - b).max(initial=0.0) / scale)


def _torch64(x, w, b, stride, padding, dilation, groups, dout):
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _run(x, w, b, stride, padding, dilation, groups, dout, kernels):
    """(inference forward's kernel, (out, dx, dw, db)): out from an inference forward (the
    one that takes Winograd), the gradients from a training forward and its backward."""
    with backend.use_kernels(kernels):
        out, _ = conv2d_forward(x, w, b, stride, padding, dilation, groups, keep_cache=False)
        _, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
        dx, dw, db = conv2d_backward(dout, cache)
        kernel = conv_choice.plan(x.shape, w.shape, stride, padding, dilation, groups,
                                  out.shape[2:], x.dtype).forward
    return kernel, (out, dx, dw, db)


def _check_three_ways(x, w, b, stride, padding, dilation, groups, expect_kernel):
    rng = np.random.default_rng(x.size)
    out_ref, _ = conv2d_forward(x.astype(np.float64), w.astype(np.float64), b, stride,
                                    padding, dilation, groups, keep_cache=False)
    dout = rng.standard_normal(out_ref.shape).astype(np.float32)
    kernel, fast = _run(x, w, b, stride, padding, dilation, groups, dout, "numba")
    assert kernel == expect_kernel
    _, ref = _run(x, w, b, stride, padding, dilation, groups, dout, "numpy")
    want = _torch64(x, w, b, stride, padding, dilation, groups, dout)
    for name, got, numpy_ref, exact in zip(("out", "dx", "dw", "db"), fast, ref, want):
        assert got.dtype == np.float32 and got.shape == exact.shape, name
        assert _rel(got, exact) < TOL[kernel], (name, _rel(got, exact))
        assert _rel(numpy_ref, exact) < 1e-5, name            # the reference path itself
        assert _rel(got, numpy_ref) < TOL[kernel] + 1e-5, name


@st.composite
def winograd_shapes(draw):
    d = draw(st.integers(1, 2))
    p = draw(st.integers(0, 2))
    h, w = (draw(st.integers(max(1, 2 * d + 1 - 2 * p), 13)) for _ in range(2))
    return draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), h, w, p, d


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(winograd_shapes())
def test_winograd_layers_match_reference_and_torch(monkeypatch, shape):
    # the same two constants are patched for every example: nothing to reset between them
    n, c, f, h, w_, p, d = shape
    monkeypatch.setattr(conv_choice, "WINOGRAD", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES_DW", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_CHANNELS", 1)
    rng = np.random.default_rng(h * 100 + w_)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    wt = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    _check_three_ways(x, wt, b, (1, 1), (p, p), (d, d), 1, "winograd4")


@pytest.mark.parametrize("shape", [(1, 3, 7, 5, 1, 1, 4), (2, 5, 10, 9, 0, 2, 3),
                                   (1, 4, 6, 11, 2, 1, 2)])
def test_winograd_forward_and_weight_grad(shape):
    n, c, h, w_, p, d, f = shape
    rng = np.random.default_rng(4)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    want = torch.nn.functional.conv2d(xt, wt, torch.tensor(b, dtype=torch.float64), 1, p, d)
    out = winograd.forward(x, w, b, (p, p), (d, d), tuple(want.shape[2:]))
    assert _rel(out, want.detach().numpy()) < TOL["winograd4"]
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want.backward(torch.tensor(dout, dtype=torch.float64))
    dw = winograd.weight_grad(x, dout, (p, p), (d, d))
    assert _rel(dw, wt.grad.numpy()) < TOL["winograd4"]


@pytest.mark.parametrize("shape", [
    # n, c, h, w, f, padding, dilation: maps wider than one vector of tiles, several
    # blocks (some spanning two images), channel counts around the kernels' groups of 16
    # and filter counts split over threads, odd sizes, padding 0-2, dilation 2
    (1, 17, 37, 29, 33, 1, 1), (3, 40, 20, 18, 20, 0, 1), (2, 16, 56, 56, 16, 1, 1),
    (1, 33, 7, 7, 18, 2, 1), (5, 24, 14, 14, 40, 1, 1), (2, 20, 23, 23, 17, 2, 2),
    (9, 32, 16, 16, 32, 1, 1)])
def test_winograd_blocks_match_torch(shape):
    """The vectorised transforms on block-sized inputs, with the conv + batch norm + ReLU
    epilogue, under the library's block threads: forward, dx (the forward of dout with
    flipped filters) and dw against PyTorch float64."""
    n, c, h, w_, f, p, d = shape
    rng = np.random.default_rng(c * f)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b, scale = (rng.standard_normal(f).astype(np.float32) for _ in range(2))
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    want = torch.nn.functional.conv2d(xt, wt, None, 1, p, d)
    size = tuple(want.shape[2:])
    dout = rng.standard_normal(want.shape).astype(np.float32)
    want.backward(torch.tensor(dout, dtype=torch.float64))
    fused = torch.relu(want.detach() * torch.tensor(scale, dtype=torch.float64)[:, None, None]
                       + torch.tensor(b, dtype=torch.float64)[:, None, None]).numpy()
    full = (2 * d - p, 2 * d - p)
    with backend.use_kernels("numba"):
        out = winograd.forward(x, w, b, (p, p), (d, d), size, relu=True, scale=scale)
        dx = winograd.forward(dout, conv_gemm.flipped_transpose(w, 1), None, full, (d, d),
                              (h, w_))
        dw = winograd.weight_grad(x, dout, (p, p), (d, d))
    assert _rel(out, fused) < TOL["winograd4"]
    assert _rel(dx, xt.grad.numpy()) < TOL["winograd4"]
    assert _rel(dw, wt.grad.numpy()) < TOL["winograd4"]


@st.composite
def depthwise_shapes(draw):
    k, s, p, d = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2)),
                  draw(st.integers(1, 2)))
    smallest = max(1, d * (k - 1) + 1 - 2 * p)
    h, w = (draw(st.integers(smallest, smallest + 6)) for _ in range(2))
    return draw(st.integers(1, 2)), draw(st.integers(2, 6)), h, w, k, s, p, d


@settings(max_examples=25)
@given(depthwise_shapes())
def test_depthwise_layers_match_reference_and_torch(shape):
    n, c, h, w_, k, s, p, d = shape
    rng = np.random.default_rng(h * 100 + w_ + k)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    _check_three_ways(x, w, b, (s, s), (p, p), (d, d), c, "depthwise")


def test_float64_stays_on_the_exact_path(monkeypatch):
    monkeypatch.setattr(conv_choice, "WINOGRAD", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((4, 8, 30, 30)), rng.standard_normal((8, 8, 3, 3)), None
    with backend.use_kernels("numba"):
        out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
        assert cache.plan.forward == "im2col"
        assert conv_choice.plan((4, 8, 30, 30), w.shape, (1, 1), (1, 1), (1, 1), 1, (30, 30),
                                np.float32).forward == "winograd4"
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, 1, 1).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)


def test_numpy_switch_selects_the_reference_path(monkeypatch):
    monkeypatch.setattr(conv_choice, "WINOGRAD", True)
    args = ((4, 64, 32, 32), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, (32, 32), np.float32)
    with backend.use_kernels("numba"):
        assert conv_choice.choose(*args) == "winograd4"
        assert conv_choice.choose((2, 8, 9, 9), (8, 1, 3, 3), (1, 1), (1, 1), (1, 1), 8, (9, 9),
                                  np.float32) == "depthwise"
    with backend.use_kernels("numpy"):
        assert conv_choice.choose(*args) == "im2col"
    code = ("import numpy as np; from volnet.functional import conv_choice; "
            f"print(conv_choice.choose{args!r})").replace("<class 'numpy.float32'>", "np.float32")
    env = dict(os.environ, VOLNET_KERNELS="numpy", VOLNET_WINOGRAD="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "im2col"
