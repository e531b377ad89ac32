"""Compiled conv kernels (Winograd, direct, depthwise) against the NumPy reference path and
PyTorch.

Shapes are drawn by Hypothesis: odd sizes, batch 1, padding 0-2, dilation 1-2. The
Winograd size threshold is lowered so small maps take that path. float32 tolerances
come from the error table in benchmarks/README.md (python -m benchmarks.winograd_error):
over every 3x3 layer of vgg16, resnet18/50, googlenet and inception_v3, the worst
normwise error against float64 direct convolution (forward, dx or dw) is 1.4e-5 for
F(4x4,3x3) and 8.5e-7 for float32 im2col. The bound below is about 6x F(4x4)'s, for
the drawn shapes' other statistics;
the direct depthwise kernel sums at most 25 products per output, like im2col; the direct
kernel (compiled/direct.py) sums every output's taps in one float32 order, like im2col's
GEMM.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volnet.functional import conv_choice
from volnet.runtime import backend
from volnet.functional.compiled import winograd
from volnet.functional.conv import conv2d_backward, conv2d_forward

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = {"winograd4": 1e-4, "depthwise": 1e-5, "direct": 1e-5}


@pytest.fixture(autouse=True)
def outer_off(monkeypatch):
    """These layers' inference forwards run the kernels named here, as where the outer
    kernel is off (VOLNET_OUTER=0); the outer kernel has its own tests
    (test_outer_conv.py)."""
    monkeypatch.setattr(conv_choice, "OUTER", False)


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
    monkeypatch.setattr(conv_choice, "DIRECT", False)
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


@pytest.mark.parametrize("shape, pass_, kernel", [
    # the default thresholds (benchmarks/README.md section 36): dx by Winograd from 64
    # tiles (4 x 14x14 maps of 256 channels: the N16 C512 7x7 row's case), dw from 256
    # (4 x 32x32 of 64 channels, whose dw ran direct before)
    ((4, 256, 14, 14, 256), "input_grad", "winograd4"),
    ((4, 64, 32, 32, 64), "weight_grad", "winograd4")])
def test_default_thresholds_route_mid_sized_layers_to_winograd(shape, pass_, kernel):
    n, c, h, w_, f = shape
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    wt = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    chosen = conv_choice.plan(x.shape, wt.shape, (1, 1), (1, 1), (1, 1), 1, (h, w_),
                              np.float32, training=True).names()
    assert chosen[pass_] == kernel
    _check_three_ways(x, wt, b, (1, 1), (1, 1), (1, 1), 1, "winograd4")


@pytest.mark.parametrize("shape", [
    # n, c, h, f, padding: the N16 C512 7x7 row's plan at 256 channels (dx by Winograd, dw
    # by im2col), the C256 14x14 row's (dx and dw by Winograd) with channel counts that are
    # no multiple of 16, and padding 0
    (16, 256, 7, 256, 1), (16, 67, 14, 70, 1), (16, 64, 16, 72, 0)])
def test_training_backward_of_the_slow_rows_shapes(shape):
    """dx and dw of the conv rows' training plans against float64 PyTorch, on one thread
    and two (benchmarks/README.md section 43)."""
    from volnet.runtime import block_threads, thread_policy
    n, c, h, f, p = shape
    rng = np.random.default_rng(c + f)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    size = (h + 2 * p - 2,) * 2
    dout = rng.standard_normal((n, f) + size).astype(np.float32)
    plan = conv_choice.plan(x.shape, w.shape, (1, 1), (p, p), (1, 1), 1, size, np.float32,
                            training=True)
    assert plan.input_grad == "winograd4"
    want = _torch64(x, w, b, (1, 1), (p, p), (1, 1), 1, dout)
    for threads in (1, 2):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            _, cache = conv2d_forward(x, w, b, (1, 1), (p, p), (1, 1), 1)
            dx, dw, db = conv2d_backward(dout, cache)
        assert _rel(dx, want[1]) < TOL["winograd4"]
        assert _rel(dw, want[2]) < TOL.get(plan.weight_grad, 1e-5)     # im2col: 1e-5
        assert _rel(db, want[3]) < 1e-5


def test_training_forward_of_a_wide_batch_layer_runs_direct():
    """A 3x3 stride-1 layer of 1800 taps (over DIRECT_MAX_TAPS) with 16 x 14 x 14 outputs per
    filter: its training forward runs the direct kernel (DIRECT_MAX_TAPS_BATCH), and the
    output and gradients match float64 PyTorch at the direct kernel's tolerance."""
    rng = np.random.default_rng(36)
    x = rng.standard_normal((16, 200, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((64, 200, 3, 3)) / np.sqrt(1800)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1)
    assert cache.plan.forward == "direct"
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dout, cache)
    want = _torch64(x, w, b, (1, 1), (1, 1), (1, 1), 1, dout)
    assert _rel(out, want[0]) < TOL["direct"]
    # dx and dw run Winograd here (the loosest of the tolerances)
    assert _rel(dx, want[1]) < TOL["winograd4"] and _rel(dw, want[2]) < TOL["winograd4"]
    assert _rel(db, want[3]) < TOL["direct"]


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
    # and filter counts split over threads, odd sizes, padding 0-3, dilation 2 and 3 (the
    # sub-grid transforms: unequal sub-grids, some with a partial last tile)
    (1, 17, 37, 29, 33, 1, 1), (3, 40, 20, 18, 20, 0, 1), (2, 16, 56, 56, 16, 1, 1),
    (1, 33, 7, 7, 18, 2, 1), (5, 24, 14, 14, 40, 1, 1), (2, 20, 23, 23, 17, 2, 2),
    (9, 32, 16, 16, 32, 1, 1), (2, 18, 19, 22, 9, 3, 3),
    # 96+ channels: blocks of BLOCK_TILES_WIDE tiles (two here, one spanning two images)
    (4, 96, 36, 30, 97, 1, 1),
    # dw: 8 blocks of 128 tiles, several per thread (partial sums added after the first)
    (16, 16, 32, 32, 16, 1, 1)])
def test_winograd_blocks_match_torch(shape):
    """The vectorised transforms on block-sized inputs, with the conv + batch norm + ReLU
    epilogue, under the library's block threads: forward, dx (the forward of dout with
    the flipped filters, whose transform is read straight from w) and dw against PyTorch
    float64."""
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
        dx = winograd.input_grad(dout, w, full, (d, d), (h, w_))
        dw = winograd.weight_grad(x, dout, (p, p), (d, d))
    assert _rel(out, fused) < TOL["winograd4"]
    assert _rel(dx, xt.grad.numpy()) < TOL["winograd4"]
    assert _rel(dw, wt.grad.numpy()) < TOL["winograd4"]


@pytest.mark.parametrize("shape", [
    # n, c, h, f, padding, dilation: batch 1 on 14x14 and 7x7 maps (fewer tiles per thread
    # than SPLIT_FILTERS_BELOW: two threads split the filters), odd filter counts, a 1x1
    # map, dilation 2; and a 28x28 map that still splits its tiles
    (1, 19, 14, 37, 1, 1), (1, 33, 7, 65, 1, 1), (1, 5, 1, 3, 1, 1), (1, 12, 14, 21, 2, 2),
    (1, 9, 28, 13, 1, 1)])
def test_winograd_small_maps_same_on_one_thread_or_two(shape):
    import numba

    from volnet.runtime import block_threads, thread_policy
    n, c, h, f, p, d = shape
    rng = np.random.default_rng(f)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b, scale = (rng.standard_normal(f).astype(np.float32) for _ in range(2))
    want = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                      torch.tensor(w, dtype=torch.float64), None, 1, p, d)
    size = tuple(want.shape[2:])
    fused = torch.relu(want * torch.tensor(scale, dtype=torch.float64)[:, None, None]
                       + torch.tensor(b, dtype=torch.float64)[:, None, None]).numpy()
    results = {}
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            results[threads] = winograd.forward(x, w, b, (p, p), (d, d), size, relu=True,
                                                scale=scale)
        assert _rel(results[threads], fused) < TOL["winograd4"]
    # a wrong split gives errors of order one; a right one differs by rounding only: a
    # share of the filters is another matrix product to BLAS, whose kernel may sum its
    # edge rows in another order (OpenBLAS's Haswell/Zen sgemm: 2.5e-6 of the largest
    # output here, after the output transform's amplification; AVX-512's: none)
    np.testing.assert_allclose(results[1], results[max(results)], rtol=0,
                               atol=1e-5 * np.abs(results[1]).max())


@st.composite
def direct_shapes(draw):
    k, s, p, d = (draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(0, 2)),
                  draw(st.integers(1, 2)))
    groups = draw(st.integers(1, 2))
    cg, fg = draw(st.integers(1, 20)), draw(st.integers(8, 19))
    smallest = max(1, d * (k - 1) + 1 - 2 * p)
    h, w = (draw(st.integers(smallest, smallest + 8)) for _ in range(2))
    return draw(st.integers(1, 3)), groups, cg, fg, h, w, k, s, p, d


@settings(max_examples=30)
@given(direct_shapes())
def test_direct_layers_match_reference_and_torch(shape):
    n, g, cg, fg, h, w_, k, s, p, d = shape
    rng = np.random.default_rng(h * 100 + w_ + k)
    x = rng.standard_normal((n, g * cg, h, w_)).astype(np.float32)
    w = rng.standard_normal((g * fg, cg, k, k)).astype(np.float32)
    b = rng.standard_normal(g * fg).astype(np.float32)
    _check_three_ways(x, w, b, (s, s), (p, p), (d, d), g, "direct")


@pytest.mark.parametrize("relu", [False, True])
def test_direct_training_plan_and_fused_epilogue(relu):
    # training forward, dw and dx (a stride-1 convolution with flipped filters) direct; the
    # inference forward with relu and a folded batch norm's scale in the direct kernel's
    # store, and with a residual sum (one pass after it)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 24, 17, 15)).astype(np.float32)
    w = rng.standard_normal((20, 24, 3, 3)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, 20).astype(np.float32)
    with backend.use_kernels("numba"):
        out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1, relu=relu)
        assert cache.plan.names() == {"forward": "direct", "input_grad": "direct",
                                      "weight_grad": "direct"}
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dout, cache)
        folded, _ = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1, keep_cache=False,
                                   relu=relu, scale=scale)
        shortcut = rng.standard_normal(out.shape).astype(np.float32)
        summed, _ = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1, keep_cache=False,
                                   relu=relu, scale=scale, residual=shortcut)
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    want = torch.nn.functional.conv2d(xt, wt, bt, 1, 1)
    want = torch.relu(want) if relu else want
    want.backward(torch.tensor(dout, dtype=torch.float64))
    assert _rel(out, want.detach().numpy()) < TOL["direct"]
    for got, exact in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        assert _rel(got, exact.numpy()) < TOL["direct"]
    lin = torch.nn.functional.conv2d(xt, wt, None, 1, 1).detach().numpy()
    lin = lin * scale[:, None, None] + b[:, None, None]
    assert _rel(folded, np.maximum(lin, 0) if relu else lin) < TOL["direct"]
    lin = lin + shortcut                    # the residual before the ReLU
    assert _rel(summed, np.maximum(lin, 0) if relu else lin) < TOL["direct"]


@pytest.mark.parametrize("kernel, shape", [
    ("direct", ((3, 8, 12, 11), (12, 8, 3, 3), 1)),
    ("direct", ((2, 6, 9, 9), (16, 3, 5, 5), 2)),          # groups, filters not a block's
    ("outer", ((3, 16, 10, 9), (70, 16, 3, 3), 1))])        # two 64-filter blocks
def test_training_relu_gate_written_with_the_output(monkeypatch, kernel, shape):
    # a training forward with a fused ReLU: the direct and outer kernels write the gradient
    # gate (out > 0) as they store each value, NaN (False) and zeros included, and the
    # backward through it matches float64 PyTorch
    monkeypatch.setattr(conv_choice, "OUTER", kernel == "outer")
    monkeypatch.setattr(conv_choice, "OUTER_TRAINING_MIN_FILTERS", 64)
    monkeypatch.setattr(conv_choice, "OUTER_TRAINING_MIN_TAPS", 16)
    x_shape, w_shape, groups = shape
    rng = np.random.default_rng(sum(x_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    x[0, 0, 2, 3] = np.nan                                 # a NaN reaches some outputs
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    b[1] = -1e30                                           # a channel rectified to zero
    with backend.use_kernels("numba"):
        out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), groups, relu=True)
        assert cache.plan.forward == kernel
        assert cache.mask.dtype == bool and cache.mask.shape == out.shape
        np.testing.assert_array_equal(cache.mask, out > 0)
        assert np.isnan(out).any() and (out[1:, 1] == 0).all()   # sample 0: NaN reaches it
        x[0, 0, 2, 3] = 0.0
        out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), groups, relu=True)
        np.testing.assert_array_equal(cache.mask, out > 0)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dout, cache)
    want = _torch64(x, w, b, (1, 1), (1, 1), (1, 1), groups, np.where(out > 0, dout, 0))
    for got, exact in ((dx, want[1]), (dw, want[2]), (db, want[3])):
        assert _rel(got, exact) < TOL["direct"]
    # the kernel itself: the gate it writes, starting from garbage; a wrong gate refused
    from volnet.errors import ShapeError
    from volnet.functional.compiled import direct, outer
    run = direct.forward if kernel == "direct" else outer.forward
    gate = np.ones(out.shape, bool)
    x[0, 0, 2, 3] = np.nan
    got = run(x, w, b, (1, 1), (1, 1), (1, 1), groups, out.shape[2:], True, mask=gate)
    np.testing.assert_array_equal(gate, got > 0)
    assert not gate.all() and gate.any()
    with pytest.raises(ShapeError, match="bool array of the output's shape"):
        run(x, w, b, (1, 1), (1, 1), (1, 1), groups, out.shape[2:], True,
            mask=np.ones(out.shape, np.uint8))


@pytest.mark.parametrize("c, f, k, s", [(32, 64, 3, 1), (8, 12, 3, 1), (16, 64, 3, 2),
                                        (3, 64, 7, 2)])
def test_empty_batch_trains_through_every_kernel(monkeypatch, c, f, k, s):
    # a batch of none (the last, empty, piece of a split): the outer, direct and phase
    # kernels' plans give empty outputs and input gradients and zero weight gradients
    monkeypatch.setattr(conv_choice, "OUTER", True)
    x = np.zeros((0, c, 9, 9), np.float32)
    w = np.ones((f, c, k, k), np.float32)
    with backend.use_kernels("numba"):
        out, cache = conv2d_forward(x, w, np.zeros(f, np.float32), (s, s), (k // 2, k // 2),
                                    relu=True)
        dx, dw, db = conv2d_backward(np.zeros(out.shape, np.float32), cache)
    assert out.shape[:2] == (0, f) and cache.mask.shape == out.shape and dx.shape == x.shape
    assert dw.shape == w.shape and not dw.any() and db.shape == (f,) and not db.any()


# (x shape, w shape, stride, padding, dilation, groups): shapes the plan leaves to other
# kernels, which the direct kernel still computes exactly
@pytest.mark.parametrize("case", [
    ((2, 4, 1, 1), (9, 4, 1, 1), 1, 0, 1, 1),            # 1x1 maps and kernel
    ((2, 6, 9, 8), (17, 6, 1, 1), 2, 0, 1, 1),           # strided 1x1: one phase read
    ((1, 3, 39, 43), (10, 3, 11, 11), 4, 2, 1, 1),       # AlexNet-like, 16 phases
    ((3, 6, 10, 7), (6, 2, 3, 3), 1, 1, 1, 3),           # 2 filters per group
    ((1, 5, 13, 12), (8, 5, 3, 2), (2, 1), (0, 2), (1, 3), 1),   # unequal per axis
    ((2, 4, 5, 5), (8, 4, 2, 2), 3, 0, 1, 1),            # phases no tap lands on: dx 0
    ((1, 4, 7, 7), (8, 4, 3, 3), 1, 3, 1, 1),            # padding beyond the kernel
])
def test_direct_kernel_forward_and_weight_grad(case):
    from volnet.functional.compiled import direct
    xs, ws, stride, padding, dilation, g = case
    pairs = [(v, v) if isinstance(v, int) else v for v in (stride, padding, dilation)]
    rng = np.random.default_rng(xs[2])
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    want = torch.nn.functional.conv2d(xt, wt, None, *pairs, g)
    out = direct.forward(x, w, None, *pairs, g, tuple(want.shape[2:]))
    assert _rel(out, want.detach().numpy()) < TOL["direct"]
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want.backward(torch.tensor(dout, dtype=torch.float64))
    dw = direct.weight_grad(x, dout, w.shape, *pairs, g)
    assert dw.dtype == np.float32 and _rel(dw, wt.grad.numpy()) < TOL["direct"]
    dx = direct.input_grad(dout, w, x.shape, *pairs, g)     # one correlation per phase
    assert dx.dtype == np.float32 and _rel(dx, xt.grad.numpy()) < TOL["direct"]


# (x shape, w shape, stride, padding, dilation, groups, tail): the forward kernel numbers
# output (oh, ow) oh * Wq + ow on the packed input's row pitch Wq; where the last number
# + 1 ends 1-16 past a whole 32-output register block (tail True, worked out by hand in
# the comments), the last block is the 16-output tail block. Filters per group mod 8 (the
# last filter block's real filters: 4-wide blocks up to 4, 6-wide up to 6) run 1-7 and 0.
@pytest.mark.parametrize("case", [
    ((64, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1, True),   # LeNet conv2: 9 * 14 + 10 = 136
    ((1, 1, 28, 28), (6, 1, 5, 5), 1, 2, 1, 1, False),    # LeNet conv1, batch 1, C 1: 892
    ((1, 1, 26, 26), (8, 1, 5, 5), 1, 2, 1, 1, True),     # 25 * 30 + 26 = 776
    ((2, 16, 10, 10), (6, 16, 5, 5), 1, 4, 1, 1, False),  # LeNet conv2's dx: 13 * 18 + 14
    ((1, 3, 9, 7), (11, 3, 3, 3), 2, 1, 1, 1, False),     # C 3, stride 2: 4 * 5 + 4 = 24
    ((3, 4, 11, 9), (10, 4, 3, 3), 1, 2, 2, 1, True),     # dilation 2: 10 * 13 + 9 = 139
    ((2, 6, 7, 13), (12, 2, 3, 3), 1, 1, 1, 3, True),     # groups: 6 * 15 + 13 = 103
    ((1, 5, 3, 3), (9, 5, 3, 3), 1, 0, 1, 1, True),       # one output: 1
    ((1, 2, 18, 18), (8, 2, 3, 3), 1, 1, 1, 1, True),     # 17 * 20 + 18 = 358
    ((2, 3, 12, 12), (14, 3, 3, 3), 1, 1, 1, 1, True),    # 14 filters: 8 + 6; 11 * 14 + 12
    ((1, 4, 9, 9), (7, 4, 3, 3), 1, 0, 1, 1, False),      # 7 filters: 6 * 9 + 7 = 61
    ((2, 4, 8, 8), (10, 2, 3, 3), 1, 1, 1, 2, True),      # 5 filters a group: 7 * 10 + 8
])
def test_direct_forward_edge_blocks_match_reference_and_torch(case):
    from volnet.functional.compiled import direct
    xs, ws, s, p, d, g, tail = case
    rng = np.random.default_rng(sum(xs))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64) for a in (x, w, b))
    want = torch.nn.functional.conv2d(xt, wt, bt, s, p, d, g).numpy()
    ho, wo = want.shape[2:]
    used = (ho - 1) * -(-(xs[3] + 2 * p) // s) + wo
    assert (0 < used % 32 <= 16) == tail, used
    got = direct.forward(x, w, b, (s, s), (p, p), (d, d), g, (ho, wo))
    assert got.dtype == np.float32 and _rel(got, want) < TOL["direct"]
    with backend.use_kernels("numpy"):
        ref, _ = conv2d_forward(x, w, b, (s, s), (p, p), (d, d), g, keep_cache=False)
    assert _rel(got, ref) < TOL["direct"] + 1e-5
    relu = direct.forward(x, w, b, (s, s), (p, p), (d, d), g, (ho, wo), relu=True)
    assert _rel(relu, np.maximum(want, 0)) < TOL["direct"]


# (x shape, w shape, stride, padding, row first): the forward sums taps filter row first
# for packed inputs up to direct.ROW_FIRST_FLOATS, skipping the filter rows that read only
# padding for a block of outputs (all of them, for outputs wholly in the padding), and
# channel first above it; both orders, with padding, at block edges
@pytest.mark.parametrize("case", [
    ((2, 16, 10, 10), (6, 16, 5, 5), 1, 4, True),      # LeNet conv2's dx: 16 * 18 * 18
    ((1, 4, 7, 7), (8, 4, 3, 3), 1, 3, True),          # output rows 0 and 6 all padding
    ((2, 3, 9, 9), (12, 3, 5, 5), 2, 3, True),         # stride 2: 2 x 2 phases
    ((1, 40, 15, 15), (9, 40, 3, 3), 1, 1, False),     # 40 * 17 * 17 floats
    ((1, 12, 30, 25), (10, 12, 5, 5), 1, 4, False),    # 12 * 38 * 33 floats
])
def test_direct_forward_tap_orders_match_torch(case):
    from volnet.functional.compiled import direct
    xs, ws, s, p, row_first = case
    rng = np.random.default_rng(sum(xs) + sum(ws))
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    want = torch.nn.functional.conv2d(xt, wt, None, s, p)
    size = tuple(want.shape[2:])
    assert direct.forward_rows(xs, ws, (s, s), (p, p), (1, 1), 1, size).row_first == row_first
    out = direct.forward(x, w, None, (s, s), (p, p), (1, 1), 1, size)
    assert _rel(out, want.detach().numpy()) < TOL["direct"]
    dout = rng.standard_normal(out.shape).astype(np.float32)
    want.backward(torch.tensor(dout, dtype=torch.float64))
    dx = direct.input_grad(dout, w, x.shape, (s, s), (p, p), (1, 1), 1)
    assert _rel(dx, xt.grad.numpy()) < TOL["direct"]


@pytest.mark.parametrize("case", [
    # n, c, h, f, k, stride, padding, groups, dx kernel: the strided layers whose dx runs by
    # phases whatever their forward runs (3 and 1 input channels: the stems; 1024 and 1536
    # filter taps per phase: ResNet's 128->256 and a 192->384 layer at small scale; groups),
    # and one past DIRECT_MAX_TAPS_DX that stays with col2im
    (2, 3, 23, 12, 11, 4, 0, 1, "direct (phases)"),
    (3, 1, 15, 6, 5, 2, 2, 1, "direct (phases)"),
    (2, 8, 9, 256, 3, 2, 1, 1, "direct (phases)"),
    (2, 12, 9, 384, 3, 2, 1, 1, "direct (phases)"),
    (2, 8, 10, 32, 3, 2, 1, 2, "direct (phases)"),
    (2, 8, 7, 520, 3, 2, 1, 1, "col2im")])
def test_strided_dx_by_phases_matches_torch(case):
    """A strided layer's dx by phases (compiled/direct.py) is chosen by its own size, filter
    taps per phase up to conv_choice.DIRECT_MAX_TAPS_DX, and matches float64 PyTorch, on
    one thread and two (benchmarks/README.md section 61)."""
    from volnet.runtime import thread_policy
    n, c, h, f, k, s, p, g, kernel = case
    rng = np.random.default_rng(c * f + k)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = (rng.standard_normal((f, c // g, k, k)) / np.sqrt(k * k * c / g)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    size = ((h + 2 * p - k) // s + 1,) * 2
    dout = rng.standard_normal((n, f) + size).astype(np.float32)
    want = _torch64(x, w, b, (s, s), (p, p), (1, 1), g, dout)
    for threads in (1, 2):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads):
            _, cache = conv2d_forward(x, w, b, (s, s), (p, p), (1, 1), g)
            assert cache.plan.input_grad == kernel
            dx, _, _ = conv2d_backward(dout, cache)
        assert _rel(dx, want[1]) < TOL["direct"]


@pytest.mark.parametrize("shape", [(1, 16, 12, 24, 1), (3, 8, 11, 8, 2), (1, 32, 9, 40, 1)])
def test_direct_same_on_one_thread_or_two(two_threads, shape):
    # batch 1 splits each sample's filter blocks among the threads, larger batches the
    # samples (dw: one float64 partial sum per thread)
    from volnet.runtime import thread_policy
    n, c, h, f, s = shape
    rng = np.random.default_rng(h)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    results = {}
    for threads in (1, 2):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads):
            out, cache = conv2d_forward(x, w, None, (s, s), (1, 1), (1, 1), 1)
            assert cache.plan.forward == cache.plan.weight_grad == "direct"
            assert cache.plan.input_grad == ("direct (phases)" if s > 1 else "direct")
            dout = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
            dx, dw, _ = conv2d_backward(dout, cache)
        results[threads] = out, dx, dw
    for one, two in zip(*results.values()):
        np.testing.assert_allclose(one, two, rtol=0, atol=1e-6 * np.abs(one).max())
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    want = torch.nn.functional.conv2d(xt, wt, None, s, 1)
    want.backward(torch.tensor(dout, dtype=torch.float64))
    for got, exact in zip(results[1], (want.detach(), xt.grad, wt.grad)):
        assert _rel(got, exact.numpy()) < TOL["direct"]


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
    monkeypatch.setattr(conv_choice, "DIRECT", False)
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


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [
    # n, c, h, w, f, padding, dilation: batch 1 and 8, odd channel and filter counts, maps
    # not multiples of 4, padding 0 and 1; the inference plan picks Winograd for these
    (1, 64, 30, 30, 65, 1, 1), (1, 65, 31, 29, 71, 0, 1), (8, 67, 13, 13, 64, 1, 1),
    (8, 64, 15, 17, 64, 0, 1)])
def test_winograd_inference_residual_in_the_output_transform(shape, relu, monkeypatch):
    """conv + folded batch norm + shortcut sum + ReLU of a residual block's last
    convolution, all in Winograd's output transform: against PyTorch float64 and the NumPy
    reference path."""
    n, c, h, w_, f, p, d = shape
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)   # batch-1 cases' Winograd
    rng = np.random.default_rng(c + f + h)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b, scale = rng.standard_normal(f).astype(np.float32), rng.uniform(0.5, 2, f).astype(
        np.float32)
    want = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                      torch.tensor(w, dtype=torch.float64), None, 1, p, d)
    shortcut = rng.standard_normal(tuple(want.shape)).astype(np.float32)
    assert conv_choice.plan(x.shape, w.shape, (1, 1), (p, p), (d, d), 1, shortcut.shape[2:],
                            np.float32).forward == "winograd4"
    lin = (want.numpy() * scale[:, None, None] + b[:, None, None]) + shortcut
    exact = np.maximum(lin, 0) if relu else lin
    outs = {}
    for kernels in ("numba", "numpy"):
        with backend.use_kernels(kernels):
            outs[kernels], _ = conv2d_forward(x, w, b, (1, 1), (p, p), (d, d), 1,
                                              keep_cache=False, relu=relu, scale=scale,
                                              residual=shortcut)
    assert _rel(outs["numba"], exact) < TOL["winograd4"]
    assert _rel(outs["numpy"], exact) < 1e-5
    assert _rel(outs["numba"], outs["numpy"]) < TOL["winograd4"]
    if relu:
        assert (outs["numba"] >= 0).all()


@pytest.mark.parametrize("shape", [(2, 20, 23, 23, 17, 2, 2), (1, 19, 14, 14, 37, 1, 1),
                                   (3, 40, 20, 18, 20, 0, 1)])
def test_winograd_forward_residual_on_subgrids_and_filter_splits(shape):
    """The shortcut sum in the dilated (tile by tile) output transform and in the batch-1
    split by filters, against PyTorch float64; a shortcut of the wrong shape is an error."""
    from volnet.errors import ShapeError
    n, c, h, w_, f, p, d = shape
    rng = np.random.default_rng(f)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    want = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                      torch.tensor(w, dtype=torch.float64),
                                      torch.tensor(b, dtype=torch.float64), 1, p, d).numpy()
    shortcut = rng.standard_normal(want.shape).astype(np.float32)
    with backend.use_kernels("numba"):
        out = winograd.forward(x, w, b, (p, p), (d, d), want.shape[2:], relu=True,
                               residual=shortcut)
        with pytest.raises(ShapeError, match="residual"):
            winograd.forward(x, w, b, (p, p), (d, d), want.shape[2:], residual=shortcut[:1, :1])
    assert _rel(out, np.maximum(want + shortcut, 0)) < TOL["winograd4"]


@pytest.mark.parametrize("shape", [
    # n, c, h, w, f, padding, dilation: odd channel counts (uneven channel shares of the
    # shared transform), maps not multiples of 4, padding 0-2, batch 1 and 3, dilation 2
    (1, 37, 28, 28, 41, 1, 1), (3, 19, 13, 11, 25, 0, 1), (1, 33, 30, 26, 8, 2, 1),
    (2, 21, 17, 19, 23, 2, 2), (1, 2, 9, 9, 3, 1, 1)])
def test_winograd_forward_split_by_filters(monkeypatch, shape):
    """The forward split by filters (one input transform shared by the threads, each
    transforming its channels, then each multiplying and back-transforming its filters)
    against PyTorch float64 and the one-thread forward, with the epilogue and a shortcut."""
    import numba

    from volnet.runtime import block_threads, thread_policy
    n, c, h, w_, f, p, d = shape
    monkeypatch.setattr(winograd, "SPLIT_FILTERS_PER_TILE", 1)    # every layer by filters
    rng = np.random.default_rng(c * f + h)
    x = rng.standard_normal((n, c, h, w_)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    b, scale = (rng.standard_normal(f).astype(np.float32) for _ in range(2))
    want = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                      torch.tensor(w, dtype=torch.float64), None, 1, p, d)
    size = tuple(want.shape[2:])
    shortcut = rng.standard_normal(tuple(want.shape)).astype(np.float32)
    exact = torch.relu(want * torch.tensor(scale, dtype=torch.float64)[:, None, None]
                       + torch.tensor(b, dtype=torch.float64)[:, None, None]
                       + torch.tensor(shortcut, dtype=torch.float64)).numpy()
    two = min(2, numba.config.NUMBA_NUM_THREADS)
    tiles_ = conv_choice.tiles(n, size, (d, d))
    assert winograd.split_by_filters(tiles_, c, f, tiles_, 2)
    results = {}
    for threads in (1, two):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            results[threads] = winograd.forward(x, w, b, (p, p), (d, d), size, relu=True,
                                                scale=scale, residual=shortcut)
        assert _rel(results[threads], exact) < TOL["winograd4"]
    # a share of the filters is another product to BLAS, which may sum its edge rows in
    # another order (OpenBLAS's Haswell/Zen sgemm: up to 2.3e-6 of the largest output)
    np.testing.assert_allclose(results[1], results[two], rtol=0,
                               atol=1e-5 * np.abs(exact).max())


@pytest.mark.parametrize(("c", "f", "hw", "dw_kernel"), [
    (32, 64, 16, "winograd4"),   # the VGG-style net's third layer: small map, 32+ channels
    (32, 32, 8, "winograd4"),
    (16, 32, 16, "direct"),      # fewer than WINOGRAD_DW_SMALL_MAP_CHANNELS
    (32, 32, 32, "direct"),      # a map of more than WINOGRAD_DW_SMALL_MAP positions
])
def test_training_dw_on_small_maps_matches_torch(c, f, hw, dw_kernel):
    # dw by Winograd below DIRECT_WINOGRAD_CHANNELS on small maps (conv_choice's rule);
    # the training forward stays direct. dx, dw and db against float64 PyTorch
    n = max(16, 512 * 16 // (hw * hw))     # 512 4x4 tiles: enough for Winograd at 32 channels
    rng = np.random.default_rng(c + f + hw)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((f, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    with backend.use_kernels("numba"):
        out, cache = conv2d_forward(x, w, b, (1, 1), (1, 1), (1, 1), 1, relu=True)
        assert cache.plan.forward == "direct" and cache.plan.weight_grad == dw_kernel
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx, dw, db = conv2d_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    want = torch.relu(torch.nn.functional.conv2d(xt, wt, bt, 1, 1))
    want.backward(torch.tensor(dout, dtype=torch.float64))
    assert _rel(out, want.detach().numpy()) < TOL["direct"]
    for got, exact in ((dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        assert _rel(got, exact.numpy()) < TOL[dw_kernel]
