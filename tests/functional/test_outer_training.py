"""The outer-product kernel (compiled/outer.py) in training plans: which layers' forward, dx
and dw it takes (conv_choice.outer_trains, outer_weight_grad), and their outputs and
gradients against the NumPy reference path and float64 PyTorch, on one thread and two.

The outer kernel sums every output's taps in one float32 order with fused multiply-adds,
as the direct kernel and im2col's GEMM do, so the exact kernels' tolerance applies (1e-5
of the largest value; the drawn layers' errors are ~1e-7).
"""

import numpy as np
import pytest
import torch

from volnet.functional import conv_choice, conv_gemm
from volnet.functional.compiled import intrinsics
from volnet.functional.conv import conv2d_backward, conv2d_forward
from volnet.runtime import backend, block_threads, thread_policy

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = 1e-5


@pytest.fixture(autouse=True)
def avx512_bounds(monkeypatch):
    """The plans below are those of a CPU with AVX-512, whatever CPU runs them (without it,
    the forward and dx rule starts at fewer filters: test_training_forward_rule_without_avx512)."""
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: True)


def _rel(a, b):
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    return float(np.abs(np.asarray(a, np.float64) - b).max(initial=0.0) / scale)


def _torch64(x, w, b, stride, padding, dilation, groups, dout, relu):
    xt, wt, bt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    out = torch.relu(out) if relu else out
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _step(x, w, b, stride, padding, dilation, groups, dout, relu):
    """(plan names, (out, dx, dw, db)) of a training forward and its backward."""
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups, relu=relu)
    return cache.plan.names(), (out,) + conv2d_backward(dout, cache)


# (x shape, w shape, stride, padding, dilation, groups, the plan's forward, dx and dw,
# kept columns allowed): layers whose training plan gives the outer kernel one or more
# passes, through each route of the rules
CASES = [
    # few tiles (4 x 4 per map: no Winograd dx), so all three from the direct kernel;
    # several samples' 7x7 maps share a tile
    ((4, 64, 7, 7), (64, 64, 3, 3), 1, 1, 1, 1, ("outer", "outer", "outer"), True),
    # two filter blocks, the second 16 wide; 360 taps; odd map
    ((5, 40, 9, 6), (80, 40, 3, 3), 1, 1, 1, 1, ("outer", "direct", "outer"), True),
    # stride 2: forward and dw (dx by the direct kernel's phases)
    ((3, 64, 11, 11), (64, 64, 3, 3), 2, 1, 1, 1, ("outer", "direct (phases)", "outer"), True),
    # dilated, 32 -> 64 (dx: 32 filters, too few)
    ((2, 32, 13, 12), (64, 32, 3, 3), 1, 2, 2, 1, ("outer", "direct", "outer"), True),
    # two groups of 64 -> 64, no padding
    ((2, 128, 8, 8), (128, 64, 3, 3), 1, 0, 1, 2, ("outer", "outer", "outer"), True),
    # 5x5, 1600 taps (over DIRECT_MAX_TAPS): im2col's three passes, its columns not kept
    ((2, 64, 8, 8), (64, 64, 5, 5), 1, 2, 1, 1, ("outer", "outer", "outer"), False),
    # LeNet conv2: dw only (16 filters, one vector)
    ((8, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1, 1, ("direct", "direct", "outer"), True),
    # 16x16 maps, 256 tiles: dw from Winograd (32 channels), forward from direct
    ((16, 32, 16, 16), (64, 32, 3, 3), 1, 1, 1, 1, ("outer", "direct", "outer"), True),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_training_plans_with_the_outer_kernel_match_reference_and_torch(monkeypatch, case,
                                                                       relu):
    x_shape, w_shape, s, p, d, g, kernels, kept = case
    monkeypatch.setattr(conv_choice, "OUTER", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", True)
    if not kept:    # columns this size would be kept by im2col's forward: the rule leaves it
        monkeypatch.setattr(conv_gemm, "KEEP_BYTES", 0)
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    args = ((s, s), (p, p), (d, d), g)
    out64, _ = conv2d_forward(x.astype(np.float64), w.astype(np.float64), b, *args,
                              keep_cache=False)
    dout = rng.standard_normal(out64.shape).astype(np.float32)
    want = _torch64(x, w, b, *args, dout, relu)
    with backend.use_kernels("numpy"):
        ref_names, ref = _step(x, w, b, *args, dout, relu)
    assert ref_names["forward"] == "im2col"          # the reference path is NumPy's
    for threads in (1, 2):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            names, got = _step(x, w, b, *args, dout, relu)
        assert (names["forward"], names["input_grad"], names["weight_grad"]) == kernels
        for name, value, numpy_ref, exact in zip(("out", "dx", "dw", "db"), got, ref, want):
            assert value.dtype == np.float32 and value.shape == exact.shape, name
            assert _rel(value, exact) < TOL, (name, threads, _rel(value, exact))
            assert _rel(value, numpy_ref) < 2 * TOL, (name, threads)


def _training_plan(x_shape, w_shape, stride=1, padding=1, groups=1, dilation=1):
    h, w = x_shape[2:]
    k = dilation * (w_shape[2] - 1) + 1
    out = ((h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1)
    with backend.use_kernels("numba"):
        return conv_choice.plan(x_shape, w_shape, (stride, stride), (padding, padding),
                                (dilation, dilation), groups, out, np.float32,
                                training=True).names()


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, forward, without", [
    ((16, 256, 14, 14), (256, 256, 3, 3), 1, 1, "outer", "direct"),   # the C256 14x14 row
    ((16, 24, 32, 32), (64, 24, 3, 3), 1, 1, "direct", "direct"),    # 216 taps: too few
    ((16, 32, 32, 32), (48, 32, 3, 3), 1, 1, "direct", "direct"),    # 48 filters: too few
    ((16, 3, 224, 224), (64, 3, 7, 7), 2, 3, "direct", "direct"),    # the stem: 147 taps
    ((16, 512, 7, 7), (512, 512, 3, 3), 1, 1, "outer", "im2col"),    # im2col would keep
    ((32, 512, 7, 7), (512, 512, 3, 3), 1, 1, "outer", "im2col"),    # ... here it would not
    ((64, 512, 28, 28), (1024, 512, 1, 1), 2, 0, "im2col", "im2col"),  # strided 1x1
])
def test_training_forward_rule(monkeypatch, x_shape, w_shape, stride, padding, forward,
                               without):
    """The rule's bounds (conv_choice.OUTER_TRAINING_MIN_FILTERS, _MIN_TAPS, kept columns,
    1x1), and VOLNET_OUTER=0 (conv_choice.OUTER off) giving every
    layer back to the exact kernel it ran before (``without``)."""
    monkeypatch.setattr(conv_choice, "OUTER", True)
    assert _training_plan(x_shape, w_shape, stride, padding)["forward"] == forward
    monkeypatch.setattr(conv_choice, "OUTER", False)
    names = _training_plan(x_shape, w_shape, stride, padding)
    assert "outer" not in names.values() and names["forward"] == without


@pytest.mark.parametrize("filters, wide, forward", [
    (48, True, "direct"), (48, False, "outer"), (32, False, "outer"), (24, False, "direct")])
def test_training_forward_rule_without_avx512(monkeypatch, filters, wide, forward):
    """Without AVX-512 the kernel's register block is 16 filters, and a training forward
    takes it from OUTER_TRAINING_MIN_FILTERS_NARROW (32) filters per group."""
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: wide)
    monkeypatch.setattr(conv_choice, "OUTER", True)
    shapes = ((16, 32, 32, 32), (filters, 32, 3, 3))
    assert _training_plan(*shapes)["forward"] == forward


def test_winograd_backward_stays_where_it_fits(monkeypatch):
    """dx and dw keep Winograd where the plan picks it on 28x28 maps of 128 channels (faster
    than the outer kernel: 1.2-1.8x); with Winograd off in training, the outer kernel takes
    dx from the direct kernel and dw from im2col."""
    monkeypatch.setattr(conv_choice, "OUTER", True)
    shapes = ((16, 128, 28, 28), (128, 128, 3, 3))
    assert _training_plan(*shapes) == {"forward": "outer", "input_grad": "winograd4",
                                       "weight_grad": "winograd4"}
    monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", False)
    assert _training_plan(*shapes) == {"forward": "outer", "input_grad": "outer",
                                       "weight_grad": "outer"}


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dw, without", [
    ((64, 3, 32, 32), (12, 3, 3, 3), 1, 1, "direct", "direct"),          # 12 filters
    ((16, 3, 224, 224), (64, 3, 7, 7), 2, 3, "outer", "direct"),         # the stem
    ((16, 512, 7, 7), (48, 512, 3, 3), 1, 1, "im2col", "im2col"),        # kept columns
    ((16, 512, 7, 7), (512, 512, 3, 3), 1, 1, "outer", "im2col"),        # outer's forward
    ((16, 256, 14, 14), (256, 256, 3, 3), 1, 1, "winograd4", "winograd4"),  # 256 channels
    ((128, 64, 16, 16), (64, 64, 3, 3), 1, 1, "outer", "winograd4"),     # 64, 16x16
    ((16, 64, 56, 56), (64, 64, 3, 3), 1, 1, "winograd4", "winograd4"),  # a 56x56 map
    ((32, 256, 28, 28), (64, 256, 1, 1), 1, 0, "im2col", "im2col"),      # 1x1
    # dilated: Winograd on sub-grids; the outer kernel up to 64 channels
    ((16, 64, 56, 56), (64, 64, 3, 3), 1, (2, 2), "outer", "winograd4"),  # the dilated row
    ((8, 128, 28, 28), (128, 128, 3, 3), 1, (2, 2), "winograd4", "winograd4"),
])
def test_training_weight_grad_rule(monkeypatch, x_shape, w_shape, stride, padding, dw,
                                   without):
    """dw's rule (conv_choice.outer_weight_grad) at its bounds, and with the outer kernel
    off (VOLNET_OUTER=0) the kernel it ran before (``without``). A (padding, dilation) pair
    for dilated layers."""
    padding, dilation = padding if isinstance(padding, tuple) else (padding, 1)
    monkeypatch.setattr(conv_choice, "OUTER", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_TRAINING", True)
    plan = _training_plan(x_shape, w_shape, stride, padding, dilation=dilation)
    assert plan["weight_grad"] == dw
    monkeypatch.setattr(conv_choice, "OUTER", False)
    plan = _training_plan(x_shape, w_shape, stride, padding, dilation=dilation)
    assert plan["weight_grad"] == without


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((32, 16, 7, 7), (72, 16, 3, 3), 1),      # 31 maps a tile, then 1; two threads: 16
    ((9, 8, 5, 6), (20, 8, 3, 3), 0),         # unpadded, read in place: 9; or 4 and 5
])
def test_sample_groups_share_tiles(x_shape, w_shape, padding):
    """Small maps: several samples' whole maps in one tile (outer.Layout.group), the last
    group shorter: the forward with every epilogue operand, and dw (whose chunks of
    positions then span samples), on one thread and two, against float64."""
    from volnet.functional.compiled import outer
    rng = np.random.default_rng(x_shape[0])
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    f = w_shape[0]
    b, scale = rng.standard_normal(f).astype(np.float32), rng.uniform(0.5, 2, f).astype(np.float32)
    out_size = tuple(s + 2 * padding - 2 for s in x_shape[2:])
    res = rng.standard_normal((x_shape[0], f) + out_size).astype(np.float32)
    args = ((1, 1), (padding, padding), (1, 1), 1, out_size)
    lin = conv_gemm.forward(x.astype(np.float64), w.astype(np.float64), *args)[0]
    want = np.maximum(lin * scale[:, None, None] + b[:, None, None] + res, 0)
    for threads in (1, 2):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            got = outer.forward(x, w, b, *args, relu=True, scale=scale, residual=res)
            dw = outer.weight_grad(x, res, w_shape, *args[:4])
            lay = outer.layout(x_shape, w_shape, *args[:4], out_size, block_threads.workers())
        assert lay.group > 1
        assert _rel(got, want) < TOL, threads
        dw_want = conv_gemm.weight_grad(x.astype(np.float64), res.astype(np.float64),
                                        w_shape, *args[:4])
        assert _rel(dw, dw_want) < TOL, threads


def test_weight_grad_long_sums_stay_accurate():
    """dw over 128 x 32 x 32 positions a filter tap: the outer kernel's blocked sum (chunks of
    outer.P_CHUNK positions, each added to the total) stays within the direct kernel's and
    im2col's error of the float64 result (~5e-7 here); one sequential float32 sum over all
    the positions was 8e-6 off."""
    from volnet.functional.compiled import outer
    rng = np.random.default_rng(3)
    x = rng.standard_normal((128, 3, 32, 32)).astype(np.float32)
    dout = rng.standard_normal((128, 32, 32, 32)).astype(np.float32)
    args = ((32, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    want = conv_gemm.weight_grad(x.astype(np.float64), dout.astype(np.float64), *args)
    with backend.use_kernels("numba"):
        got = outer.weight_grad(x, dout, *args)
    assert _rel(got, want) < 2e-6


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((24, 6, 14, 14), (16, 6, 5, 5), 1, 0),       # one block of filters: two halves of the batch
    ((9, 32, 9, 9), (96, 32, 3, 3), 2, 1),        # two blocks (4 and 2 vectors)
    ((16, 64, 7, 7), (192, 64, 3, 3), 1, 1),      # three blocks, samples sharing a tile
])
def test_weight_grad_same_bits_on_one_thread_or_two(two_threads, x_shape, w_shape, stride,
                                                    padding):
    """outer.weight_grad gives the same bits whatever the thread count (a training run
    resumed on another thread count repeats the first exactly: tests/test_cli_train.py)."""
    from volnet.functional.compiled import outer
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape).astype(np.float32)
    size = tuple((s + 2 * padding - w_shape[2]) // stride + 1 for s in x_shape[2:])
    dout = rng.standard_normal((x_shape[0], w_shape[0]) + size).astype(np.float32)
    args = (w_shape, (stride, stride), (padding, padding), (1, 1), 1)
    got = {}
    for threads in (1, two_threads):
        with thread_policy.use_threads(threads), block_threads.section():
            got[threads] = outer.weight_grad(x, dout, *args)
    np.testing.assert_array_equal(got[1], got[two_threads])
    want = conv_gemm.weight_grad(x.astype(np.float64), dout.astype(np.float64), *args)
    assert _rel(got[1], want) < TOL


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups", [
    ((24, 6, 14, 14), (16, 6, 5, 5), 1, 0, 1),    # one block of filters: two halves of the batch
    ((9, 32, 9, 9), (96, 32, 3, 3), 2, 1, 1),     # two blocks (4 and 2 vectors)
    ((16, 64, 7, 7), (192, 64, 3, 3), 1, 1, 1),   # three blocks, samples sharing a tile
    ((4, 128, 8, 8), (144, 64, 3, 3), 1, 1, 2),   # two groups of two blocks, the last short
])
def test_gated_weight_grad_is_the_relu_backward_then_dw(two_threads, x_shape, w_shape,
                                                        stride, padding, groups):
    """outer.gated_weight_grad (a fused ReLU's backward, the bias gradient and dw in one
    read of dout) gives what the three separate passes give: the gated dout and dw bit for
    bit, db as the float64 sum; NaN and inf where the gate is shut count for nothing (as
    relu_backward's), one where it is open passes into dw and db; the same bits on one
    thread or two, with the gated dout kept or not."""
    from volnet.functional.compiled import outer
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape).astype(np.float32)
    size = tuple((s + 2 * padding - w_shape[2]) // stride + 1 for s in x_shape[2:])
    dout = rng.standard_normal((x_shape[0], w_shape[0]) + size).astype(np.float32)
    gate = rng.random(dout.shape) < 0.6
    shut = np.argwhere(~gate)
    dout[tuple(shut[0])], dout[tuple(shut[1])] = np.nan, np.inf
    args = (w_shape, (stride, stride), (padding, padding), (1, 1), groups)
    want_gated = np.where(gate, dout, np.float32(0))
    want_db = want_gated.astype(np.float64).sum(axis=(0, 2, 3))
    got = {}
    for threads in (1, two_threads):
        with thread_policy.use_threads(threads), block_threads.section():
            want_dw = outer.weight_grad(x, want_gated, *args)
            got[threads] = outer.gated_weight_grad(x, dout, gate, *args)
            dw, db, gated = outer.gated_weight_grad(x, dout, gate, *args, keep_gated=False)
        assert gated is None
        np.testing.assert_array_equal(got[threads][0], want_dw)
        np.testing.assert_array_equal(dw, want_dw)
        np.testing.assert_array_equal(db, got[threads][1])
        np.testing.assert_array_equal(got[threads][2], want_gated)
        assert got[threads][1].dtype == np.float32
        np.testing.assert_allclose(got[threads][1], want_db, rtol=1e-6, atol=1e-6)
    for a, b in zip(got[1], got[two_threads]):
        np.testing.assert_array_equal(a, b)
    # a NaN where the gate is open reaches dw's and db's rows of its filter, and only those
    filt = tuple(np.argwhere(gate)[0])
    dout[filt] = np.nan
    with thread_policy.use_threads(1):
        dw, db, _ = outer.gated_weight_grad(x, dout, gate, *args)
    assert np.isnan(db[filt[1]]) and np.isnan(db).sum() == 1
    assert np.isnan(dw[filt[1]]).any() and not np.isnan(np.delete(dw, filt[1], 0)).any()


def test_gated_weight_grad_refuses_a_wrong_gate_and_takes_an_empty_batch():
    from volnet.errors import ShapeError
    from volnet.functional.compiled import outer
    x = np.zeros((2, 8, 6, 6), np.float32)
    dout = np.zeros((2, 16, 6, 6), np.float32)
    args = ((16, 8, 3, 3), (1, 1), (1, 1), (1, 1), 1)
    for gate in (np.ones((2, 16, 6, 5), bool), np.ones(dout.shape, np.float32)):
        with pytest.raises(ShapeError, match="gate"):
            outer.gated_weight_grad(x, dout, gate, *args)
    dw, db, gated = outer.gated_weight_grad(x[:0], dout[:0], np.ones((0, 16, 6, 6), bool),
                                            *args)
    assert (dw.shape, db.shape, gated.shape) == ((16, 8, 3, 3), (16,), (0, 16, 6, 6))
    assert not dw.any() and not db.any()
