"""The pointwise (1x1) inference convolution (compiled/pointwise.py) against PyTorch in float64
and the NumPy reference path (VOLNET_KERNELS=numpy), over shapes that reach every branch of
its kernel; its fused epilogue; one thread against two bit for bit, for every way the work
splits; every read and write inside its array (the register block indexes raw pointers,
unchecked), shown on guard-filled arrays; and where the plan runs it.

Tolerance: each output sums its channels in one float32 order with fused multiply-adds, the
error class of im2col's GEMM and the direct kernel (test_compiled_conv.py: 1e-5).
"""

import numpy as np
import pytest
from guarded_arrays import guarded, guards
from hypothesis import given, settings
from hypothesis import strategies as st
from operand_forms import check_operand_forms
from torch_reference import conv_epilogue

from volnet.errors import ShapeError
from volnet.functional import conv_choice
from volnet.functional.compiled import intrinsics, pointwise
from volnet.functional.conv import conv2d_forward, conv_output_size
from volnet.runtime import backend, block_threads, thread_policy

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = 1e-5

# n, c, h, w, f, stride, groups; what each adds is in its comment, and
# test_cases_reach_every_branch checks that together they reach every branch
CASES = [
    (1, 3, 5, 5, 6, (1, 1), 1),          # one 6-filter block, 25 positions: two vectors
    (1, 16, 8, 8, 7, (1, 1), 1),         # 64 positions: one full panel; 6 + 1 filters
    (1, 8, 9, 9, 13, (1, 1), 1),         # 81 positions: a panel and a one-vector tail
    (2, 20, 7, 7, 5, (1, 1), 1),         # batch 2, 49 positions: four vectors, one lane used
    (1, 130, 6, 7, 12, (1, 1), 1),       # 130 channels: two chunks (K_CHUNK 128)
    (1, 300, 3, 3, 4, (1, 1), 1),        # 300 channels: three chunks, 9 positions
    (1, 12, 17, 18, 20, (1, 1), 1),      # 306 positions: panels split over two threads
    (3, 8, 6, 6, 1, (1, 1), 1),          # one filter, batch 3
    (1, 12, 9, 9, 18, (1, 1), 3),        # groups 3 of 4 channels, 6 filters each
    (1, 8, 6, 6, 14, (1, 1), 2),         # groups 2 of 7 filters: a block per group's tail
    (2, 16, 11, 9, 24, (2, 2), 1),       # strided, batch 2
    (1, 10, 7, 11, 9, (3, 2), 1),        # unequal strides, batch 1
    (1, 4, 1, 1, 3, (1, 1), 1),          # one position
    (1, 260, 5, 5, 36, (2, 2), 4),       # groups 4 of 65 channels, strided
]


def _rel(a, b):
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-30)
    return float(np.abs(np.asarray(a, np.float64) - b).max(initial=0.0) / scale)


def _out_size(case):
    _, _, h, w, _, s, _ = case
    return conv_output_size(h, 1, s[0], 0, 1), conv_output_size(w, 1, s[1], 0, 1)


def _operands(case, seed=0):
    """x, w, bias, scale and a residual of the output's shape for ``case``."""
    n, c, h, w, f, _, g = case
    rng = np.random.default_rng(seed + sum((n, c, h, w, f)))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c // g, 1, 1)) / np.sqrt(c // g)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, f).astype(np.float32)
    residual = rng.standard_normal((n, f, *_out_size(case))).astype(np.float32)
    return x, wt, b, scale, residual


def _torch_fused(x, w, b, scale, residual, relu, case):
    *_, s, g = case
    return conv_epilogue(x, w, b, scale, residual, relu, s, 0, 1, g)


def _forward(case, x, w, b, relu=False, scale=None, residual=None):
    *_, s, g = case
    return pointwise.forward(x, w, b, s, g, _out_size(case), relu, scale, residual)


@pytest.mark.parametrize("case", CASES)
def test_pointwise_matches_reference_path_and_torch(case):
    x, w, b, _, _ = _operands(case)
    *_, s, g = case
    got = _forward(case, x, w, b)
    want = _torch_fused(x, w, b, None, None, False, case)
    with backend.use_kernels("numpy"):
        ref, _ = conv2d_forward(x, w, b, s, (0, 0), (1, 1), g, keep_cache=False)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(ref, want) < TOL
    assert _rel(got, want) < TOL and _rel(got, ref) < 2 * TOL


def test_cases_reach_every_branch():
    """Each branch is taken by some case: the register block's four widths (the positions
    left in a panel: 1-16, 17-32, 33-48, 49-64), a full panel and several, a filter block
    short of six rows, one and several chunks of channels, groups, batch over one, strides
    on each axis, one position; and the splits of layout (by positions, by filters, by
    samples)."""
    seen = set()
    for case in CASES:
        n, c, _, _, f, s, g = case
        positions = int(np.prod(_out_size(case)))
        tail = positions % pointwise.PANEL or pointwise.PANEL
        seen |= {("vectors", -(-tail // pointwise.LANES)), ("panels>1", positions > 64),
                 ("short block", f // g % pointwise.ROWS != 0),
                 ("chunks", c // g > pointwise.K_CHUNK), ("groups", g > 1), ("batch", n > 1),
                 ("one position", positions == 1)}
        seen |= {("stride", v) for v in s}
        seen |= {("split", _split(pointwise.layout(n, f, positions, 2)))}
    want = {("vectors", v) for v in (1, 2, 3, 4)} | {("stride", v) for v in (1, 2, 3)} | {
        (name, True) for name in ("panels>1", "short block", "chunks", "groups", "batch",
                                  "one position")} | {
        ("split", how) for how in ("positions", "filters", "samples")}
    assert want <= seen, want - seen


def _split(shares) -> str:
    """How ``shares`` of two threads divide the work."""
    if len(shares) == 1:
        return "none"
    (n0, _, p0, _, _, _), (m0, _, q0, _, _, _) = shares
    return "samples" if n0 != m0 else "positions" if p0 != q0 else "filters"


@pytest.mark.parametrize("n, f, positions, threads, want", [
    (1, 64, 3136, 2, ((0, 1, 0, 1568, 0, 64), (0, 1, 1568, 3136, 0, 64))),
    (1, 256, 784, 2, ((0, 1, 0, 384, 0, 256), (0, 1, 384, 784, 0, 256))),
    # under two panels a thread: by 6-filter blocks (43 of them: 21 and 22)
    (1, 256, 196, 2, ((0, 1, 0, 196, 0, 126), (0, 1, 0, 196, 126, 256))),
    (1, 2048, 49, 2, ((0, 1, 0, 49, 0, 1026), (0, 1, 0, 49, 1026, 2048))),
    (8, 64, 49, 2, ((0, 4, 0, 49, 0, 64), (4, 8, 0, 49, 0, 64))),
    (3, 64, 49, 2, ((0, 1, 0, 49, 0, 64), (1, 3, 0, 49, 0, 64))),
    (1, 5, 49, 2, ((0, 1, 0, 49, 0, 5),)),           # one block of filters: no split
    (1, 64, 3136, 1, ((0, 1, 0, 3136, 0, 64),)),
])
def test_layout_shares_cover_the_work_once(n, f, positions, threads, want):
    """Position runs start on a 16-lane vector, filter runs on a 6-filter block; every
    (sample, filter, position) in exactly one share (hand-computed)."""
    assert pointwise.layout(n, f, positions, threads) == want


# (case, how two threads share the work)
THREAD_CASES = [(CASES[6], "positions"), (CASES[4], "filters"), (CASES[7], "samples"),
                (CASES[10], "samples"), (CASES[11], "filters"), (CASES[8], "filters")]


@pytest.mark.parametrize("case, split", THREAD_CASES)
def test_one_thread_and_two_are_bit_identical(two_threads, monkeypatch, case, split):
    """The split changes who computes an output, never how: the same bits on one thread
    and two, strided layers included (a batch-1 strided input subsampled once by the
    caller; a larger batch's, sample by sample, by each thread)."""
    x, w, b, scale, residual = _operands(case)
    n, _, _, _, f, _, _ = case
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)     # these small layers split too
    assert _split(pointwise.layout(n, f, int(np.prod(_out_size(case))), two_threads)) == split
    counts, real_run = [], block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    results = []
    for threads in (1, two_threads):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            assert block_threads.workers() == threads
            results.append(_forward(case, x, w, b, True, scale, residual))
    assert counts == [1, 2]
    np.testing.assert_array_equal(results[0], results[1])
    assert _rel(results[1], _torch_fused(x, w, b, scale, residual, True, case)) < TOL


EPILOGUES = [(s, b, r, relu) for s in (False, True) for b in (False, True)
             for r in (False, True) for relu in (False, True)]


@pytest.mark.parametrize("case", [CASES[4], CASES[9]])
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_fused_epilogue_matches_torch(case, epilogue):
    """conv * scale + bias (+ residual), rectified, in registers after the last chunk of
    channels (CASES[4] sums two chunks: the first chunk's sums wait in the output)."""
    x, w, b, scale, residual = _operands(case)
    with_scale, with_bias, with_res, relu = epilogue
    args = (b if with_bias else None, relu, scale if with_scale else None,
            residual if with_res else None)
    got = _forward(case, x, w, *args)
    want = _torch_fused(x, w, args[0], args[2], args[3], relu, case)
    assert _rel(got, want) < TOL


def test_relu_keeps_nan_and_maps_negative_zero_to_zero():
    """The ReLU is ``v <= 0 -> 0``, as the other kernels' epilogues: NaN passes (as
    np.maximum and PyTorch's relu), -inf and -0.0 give +0.0, +inf stays."""
    case = CASES[1]
    x, w, b, _, _ = _operands(case)
    x[0, :, 0, 0] = np.nan
    b[:3] = (-np.inf, np.inf, 0.0)
    w[:3] = 0.0
    got = _forward(case, x, w, b, True)
    assert np.isnan(got[0, 3:, 0, 0]).all()
    assert np.isnan(got[0, :3, 0, 0]).all()     # 0 * NaN is NaN, whatever the bias
    assert (got[0, 0, 0, 1:] == 0).all() and not np.signbit(got[0, 0, 0, 1:]).any()
    assert np.isposinf(got[0, 1, 0, 1:]).all()
    assert (got[0, 2, 0, 1:] == 0).all() and not np.signbit(got[0, 2, 0, 1:]).any()


@st.composite
def layers(draw):
    """Any 1x1 layer of small sizes, stride 1 only (items reads x as (N, C, P); a
    strided input is subsampled by forward first): groups 1-3, 1-140 channels and 1-20
    filters per group, maps of 1-150 positions."""
    g = draw(st.integers(1, 3))
    return (draw(st.integers(1, 3)), g * draw(st.integers(1, 140)), draw(st.integers(1, 10)),
            draw(st.integers(1, 15)), g * draw(st.integers(1, 20)), (1, 1), g)


@pytest.mark.parametrize("case", [c for c in CASES if c[5] == (1, 1)])
def test_reads_and_writes_stay_inside_their_arrays(case):
    _check_inside_arrays(case)


@settings(max_examples=40, deadline=None)
@given(layers())
def test_any_layer_stays_inside_its_arrays_and_matches_torch(case):
    _check_inside_arrays(case)


def _check_inside_arrays(case):
    """The kernel on operands and output that sit between guards: NaN around everything
    it reads (a read past an edge makes an output NaN: no ReLU here, and the output is
    checked finite) and a sentinel around its output (a write past an edge changes a
    guard). Every output starts NaN, so one left unwritten shows too. The work is split
    as for two threads and run share by share.

    Why no access leaves its array (pointwise.py's module docstring, "Bounds"): x is read
    at xo + c * P + q with q < valid <= P - pp, c < C/G, from the group's row at the
    panel's first position; the weights at rows below F, columns below C/G; the output
    and residual in rows j < rows, lanes below valid, of the sample's F x P."""
    n, c, _, _, f, _, g = case
    x, w, b, scale, residual = _operands(case, seed=7)
    want = _torch_fused(x, w, b, scale, residual, False, case)
    positions = int(np.prod(_out_size(case)))
    arrays = {name: guarded(v) for name, v in (("x", x.reshape(n, c, positions)),
                                                ("w2", w.reshape(f, -1)), ("bias", b),
                                                ("scale", scale),
                                                ("residual", residual.reshape(n, f, -1)))}
    out_buf, out = guarded(np.full((n, f, positions), np.nan), fill=-1234.5)
    for share in pointwise.layout(n, f, positions, 2):
        pointwise.items(arrays["x"][1], arrays["w2"][1], g, *share, out,
                        arrays["scale"][1], arrays["bias"][1], arrays["residual"][1], 7)
    assert (guards(out_buf) == np.float32(-1234.5)).all()
    for name, (buf, _) in arrays.items():
        assert np.isnan(guards(buf)).all(), name
    assert np.isfinite(out).all()
    assert _rel(out.reshape(want.shape), want) < TOL
    np.testing.assert_array_equal(out.reshape(want.shape),
                                  _forward(case, x, w, b, False, scale, residual))


def test_noncontiguous_float64_byteswapped_and_read_only_operands():
    """forward copies any layout and dtype to contiguous float32: the same bits as from
    those copies, a float32 result; read-only operands (a memory-mapped checkpoint's
    weights) are read in place; a batch of 0 gives an empty output."""
    case = CASES[10]
    check_operand_forms(lambda *args: _forward(case, *args), *_operands(case))


@pytest.mark.parametrize("change, message", [
    (lambda ops: {**ops, "w": ops["w"][:, :3]}, "groups"),            # C/G channels wrong
    (lambda ops: {**ops, "groups": 3}, "groups"),                     # F and C not by G
    (lambda ops: {**ops, "w": np.zeros((10, 4, 3, 3), np.float32)}, "1x1"),
    (lambda ops: {**ops, "out_size": (4, 3)}, "output"),              # an output too many
    (lambda ops: {**ops, "bias": ops["bias"][:5]}, "bias"),
    (lambda ops: {**ops, "scale": ops["scale"][:1]}, "scale"),
    (lambda ops: {**ops, "residual": ops["residual"][:, :, :1]}, "residual"),
    (lambda ops: {**ops, "residual": ops["residual"][:1]}, "residual"),
])
def test_operands_of_the_wrong_shape_raise(change, message):
    """The kernel indexes without checks, so operands no 1x1 convolution has are refused
    before it runs, naming what is wrong."""
    case = (2, 8, 6, 6, 10, (2, 2), 2)
    x, w, b, scale, residual = _operands(case)
    ops = change({"w": w, "groups": 2, "out_size": _out_size(case), "bias": b,
                  "scale": scale, "residual": residual})
    with pytest.raises(ShapeError, match=message):
        pointwise.forward(x, ops["w"], ops["bias"], (2, 2), ops["groups"], ops["out_size"],
                          True, ops["scale"], ops["residual"])


def test_plan_picks_pointwise_for_float32_inference_only(monkeypatch):
    """The plan runs the kernel for float32 1x1 inference forwards: at batch 1 on any map,
    at larger batches on maps of POINTWISE_MIN_POSITIONS outputs and more (smaller ones
    keep BLAS's wide product); never for float64, a padded 1x1 layer, training, or with
    VOLNET_POINTWISE=0 (conv_choice.POINTWISE), nor on a CPU without AVX-512 (BLAS's
    packed products win there: benchmarks/README.md, 63)."""
    monkeypatch.setattr(conv_choice, "POINTWISE", True)
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: True)

    def kernel(n, hw, dtype=np.float32, training=False, threads=2, padding=(0, 0)):
        monkeypatch.setattr(block_threads, "workers", lambda: threads)
        with backend.use_kernels("numba"):
            size = conv_output_size(hw, 1, 1, padding[0], 1)
            return conv_choice.plan((n, 64, hw, hw), (128, 64, 1, 1), (1, 1), padding, (1, 1),
                                    1, (size, size), dtype, training=training).forward

    assert kernel(1, 7) == "pointwise" and kernel(1, 56) == "pointwise"
    assert kernel(8, 16) == "pointwise" and kernel(8, 15) == "gemm1x1"     # 256 vs 225
    assert kernel(1, 7, threads=1) == "gemm1x1" and kernel(1, 16, threads=1) == "pointwise"
    assert kernel(1, 56, np.float64) == "gemm1x1"
    assert kernel(1, 56, training=True) == "gemm1x1"
    assert kernel(1, 56, padding=(1, 1)) not in ("pointwise", "gemm1x1")
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: False)
    assert kernel(1, 56) == "gemm1x1" and kernel(8, 16) == "gemm1x1"
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: True)
    monkeypatch.setattr(conv_choice, "POINTWISE", False)
    assert kernel(1, 56) == "gemm1x1"


def test_conv2d_forward_runs_it_with_its_epilogue(monkeypatch):
    """conv2d_forward's inference output with the plan on the kernel: the layer's bias,
    folded batch norm scale, residual and ReLU, as PyTorch float64 gives them."""
    monkeypatch.setattr(conv_choice, "POINTWISE", True)
    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: True)
    case = (1, 40, 12, 12, 30, (2, 2), 1)
    x, w, b, scale, residual = _operands(case)
    with backend.use_kernels("numba"):
        assert conv_choice.plan(x.shape, w.shape, (2, 2), (0, 0), (1, 1), 1, _out_size(case),
                                np.float32).forward == "pointwise"
        out, cache = conv2d_forward(x, w, b, (2, 2), keep_cache=False, relu=True,
                                    scale=scale, residual=residual)
    assert cache is None
    assert _rel(out, _torch_fused(x, w, b, scale, residual, True, case)) < TOL
