"""The outer-product convolution (compiled/outer.py, outer_kernels.py) against PyTorch in float64
and the NumPy reference path (VOLNET_KERNELS=numpy), over shapes that reach every branch of
its kernels; its fused epilogue and NaN handling against the direct and im2col kernels; one
thread against two bit for bit; and every read and write inside its array (the kernels'
intrinsics index raw pointers, unchecked), shown on guard-filled arrays.

Tolerance: the kernel sums each output's taps in one float32 order with fused multiply-adds,
the error class of im2col's GEMM and the direct kernel (test_compiled_conv.py: 1e-5).
"""

import numpy as np
import pytest
from guarded_arrays import GUARD, guarded, guards
from hypothesis import given, settings
from hypothesis import strategies as st
from operand_forms import check_operand_forms
from torch_reference import conv_epilogue

from volnet.errors import ShapeError
from volnet.functional import conv_choice
from volnet.functional.compiled import outer
from volnet.functional.compiled import outer_kernels as kernels
from volnet.functional.conv import conv2d_forward, conv_output_size
from volnet.runtime import backend, block_threads, thread_policy

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = 1e-5

# n, c, h, w, f, kernel, stride, padding, dilation, groups; what each adds is in its comment
# and test_cases_reach_every_branch checks that together they reach every branch
CASES = [
    (1, 3, 5, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # 6 filters (one vector), 25 outputs
    (3, 8, 9, 7, 17, (3, 3), (2, 1), (0, 2), (1, 1), 1),     # batch 3, unequal stride and padding
    (1, 16, 7, 7, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 48 filters: three vectors
    (2, 15, 12, 11, 65, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # 64 + 1 filters, 135 taps > K_CHUNK
    (1, 10, 7, 7, 130, (3, 3), (1, 1), (1, 1), (1, 1), 1),   # 64 + 64 + 2 filters
    (1, 8, 6, 6, 130, (3, 3), (1, 1), (3, 3), (2, 2), 2),    # groups 2 of 65, padding past the taps
    (1, 12, 9, 10, 68, (5, 5), (3, 3), (2, 1), (1, 1), 4),   # groups 4 of 17, stride 3, 5x5
    (1, 64, 6, 6, 48, (1, 1), (2, 2), (0, 0), (1, 1), 1),    # strided 1x1
    (2, 20, 5, 5, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1),     # 1x1, one filter
    (1, 4, 42, 40, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # 1680 outputs: two tiles
    (1, 5, 1, 1, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # 1x1 map under a 3x3 kernel
    (1, 5, 3, 3, 7, (3, 3), (1, 1), (0, 0), (1, 1), 1),      # one output, input read in place
    (1, 6, 2, 9, 16, (3, 3), (1, 1), (1, 0), (1, 4), 1),     # Wo 1 by dilation 4, 16 filters
    (2, 8, 11, 13, 64, (3, 5), (2, 3), (1, 2), (2, 1), 1),   # unequal kernel, stride, dilation
    (1, 130, 4, 4, 34, (3, 3), (2, 2), (1, 1), (1, 1), 2),   # groups 2, 585 taps: 5 chunks
]


def _rel(a, b):
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-30)
    return float(np.abs(np.asarray(a, np.float64) - b).max(initial=0.0) / scale)


def _out_size(case):
    _, _, h, w, _, (kh, kw), s, p, d, _ = case
    return (conv_output_size(h, kh, s[0], p[0], d[0]), conv_output_size(w, kw, s[1], p[1], d[1]))


def _operands(case, seed=0):
    """x, w, bias, scale and a residual of the output's shape for ``case``."""
    n, c, h, w, f, (kh, kw), _, _, _, g = case
    rng = np.random.default_rng(seed + sum((n, c, h, w, f)))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c // g, kh, kw)) / np.sqrt(c // g * kh * kw)).astype(
        np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, f).astype(np.float32)
    residual = rng.standard_normal((n, f, *_out_size(case))).astype(np.float32)
    return x, wt, b, scale, residual


def _torch_fused(x, w, b, scale, residual, relu, case):
    """The layer in float64: conv * scale + b (+ residual), rectified when ``relu``."""
    *_, s, p, d, g = case
    return conv_epilogue(x, w, b, scale, residual, relu, s, p, d, g)


def _forward(case, x, w, b, relu=False, scale=None, residual=None):
    *_, s, p, d, g = case
    return outer.forward(x, w, b, s, p, d, g, _out_size(case), relu, scale, residual)


@pytest.mark.parametrize("case", CASES)
def test_outer_matches_reference_path_and_torch(case):
    x, w, b, _, _ = _operands(case)
    *_, s, p, d, g = case
    got = _forward(case, x, w, b)
    want = _torch_fused(x, w, b, None, None, False, case)
    with backend.use_kernels("numpy"):
        ref, _ = conv2d_forward(x, w, b, s, p, d, g, keep_cache=False)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _rel(ref, want) < TOL                 # the reference path itself
    assert _rel(got, want) < TOL and _rel(got, ref) < 2 * TOL


def test_cases_reach_every_branch():
    """Each branch of the kernels is taken by some case: the register block's four widths
    (filters per group mod 64 in 1-16, 17-32, 33-48, 49-64) and several filter blocks per
    group, taps no multiple of 16 (_load_chunk's scalar tail) and over K_CHUNK (partial sums
    added), outputs no multiple of 6 (a padded last block) and of 16 (_store's scalar tail),
    more than a TILE of them, one output, packed (padded) and in-place inputs, batches over
    two threads, groups, every stride 1-3."""
    seen = set()
    for case in CASES:
        n, c, _, _, f, (kh, kw), s, p, _, g = case
        positions = np.prod(_out_size(case))
        taps = c // g * kh * kw
        for fg in {f // g % kernels.FILTERS or kernels.FILTERS}:
            seen.add(("vectors", -(-fg // kernels.LANES)))
        seen |= {("blocks>1", f // g > kernels.FILTERS), ("taps%16", taps % 16 != 0),
                 ("chunks", taps > outer.K_CHUNK), ("pad block", positions % 6 != 0),
                 ("store tail", positions % 16 != 0), ("tiles", positions > outer.TILE),
                 ("one output", positions == 1), ("packed", max(p) > 0),
                 ("in place", max(p) == 0), ("batch>2", n > 2), ("groups", g > 1),
                 ("1x1", kh * kw == 1)}
        seen |= {("stride", v) for v in s}
    want = {("vectors", v) for v in (1, 2, 3, 4)} | {("stride", v) for v in (1, 2, 3)} | {
        (name, True) for name in ("blocks>1", "taps%16", "chunks", "pad block", "store tail",
                                  "tiles", "one output", "packed", "in place", "batch>2",
                                  "groups", "1x1")}
    assert want <= seen, want - seen


EPILOGUES = [(s, b, r, relu) for s in (False, True) for b in (False, True)
             for r in (False, True) for relu in (False, True)]


@pytest.mark.parametrize("case", [CASES[3], CASES[6]])
@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_fused_epilogue_matches_torch(case, epilogue):
    """Every combination of scale, bias, residual and ReLU, applied in the store."""
    with_scale, with_bias, with_res, relu = epilogue
    x, w, b, scale, residual = _operands(case)
    b, scale, residual = (v if on else None for v, on in
                          ((b, with_bias), (scale, with_scale), (residual, with_res)))
    kept = None if residual is None else residual.copy()
    got = _forward(case, x, w, b, relu, scale, residual)
    want = _torch_fused(x, w, b, scale, residual, relu, case)
    assert _rel(got, want) < TOL
    if residual is not None:
        np.testing.assert_array_equal(residual, kept)       # read, never written


def _conv_by(kernel, monkeypatch, x, w, b, case, relu, scale, residual):
    """conv2d_forward's inference output with the plan steered to ``kernel`` ("outer",
    "direct" or "im2col"), asserting that the plan took it."""
    *_, s, p, d, g = case
    monkeypatch.setattr(conv_choice, "OUTER", kernel == "outer")
    monkeypatch.setattr(conv_choice, "DIRECT", kernel == "direct")
    with backend.use_kernels("numba"):
        chosen = conv_choice.plan(x.shape, w.shape, s, p, d, g, _out_size(case),
                                  np.float32).forward
        out, _ = conv2d_forward(x, w, b, s, p, d, g, keep_cache=False, relu=relu,
                                scale=scale, residual=residual)
    assert chosen == kernel
    return out


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
def test_nan_inputs_give_what_direct_and_im2col_give(monkeypatch, relu, with_residual):
    """NaN in the input (and in the residual) reaches the outputs that read it, as in the
    direct and im2col kernels; their ReLU keeps NaN (as ``np.maximum(x, 0)`` and PyTorch's
    relu), and so does the outer kernel's store (checked here, not assumed)."""
    case = (2, 10, 9, 9, 20, (3, 3), (2, 2), (1, 1), (1, 1), 1)   # stride 2: no Winograd
    x, w, b, scale, residual = _operands(case)
    x[0, 3, 4, 4] = np.nan
    x[1, 0, 0, 8] = np.nan                      # a corner: only the border outputs read it
    residual = residual if with_residual else None
    if residual is not None:
        residual[1, 5, 2, 3] = np.nan
    outs = {k: _conv_by(k, monkeypatch, x, w, b, case, relu, scale, residual)
            for k in ("outer", "direct", "im2col")}
    clean = _torch_fused(np.nan_to_num(x), w, b, scale,
                         None if residual is None else np.nan_to_num(residual), relu, case)
    hit = np.isnan(_torch_fused(x, w, b, scale, residual, False, case))
    assert hit.any() and not hit.all()
    for kernel in ("direct", "im2col"):
        np.testing.assert_array_equal(np.isnan(outs["outer"]), np.isnan(outs[kernel]))
        np.testing.assert_allclose(outs["outer"], outs[kernel], rtol=0,
                                   atol=TOL * np.abs(clean).max())
    np.testing.assert_array_equal(np.isnan(outs["outer"]), hit)
    assert _rel(np.where(hit, 0, outs["outer"]), np.where(hit, 0, clean)) < TOL


# (case, how the two threads share the work): batch 1 by filter blocks, by tiles of
# positions (one filter block), batch 3 by samples, a grouped layer by its groups' blocks
THREAD_CASES = [(CASES[4], "blocks"), (CASES[9], "tiles"), (CASES[1], "samples"),
                (CASES[5], "blocks"), (CASES[0], "tiles")]


@pytest.mark.parametrize("case, split", THREAD_CASES)
def test_one_thread_and_two_are_bit_identical(two_threads, monkeypatch, case, split):
    x, w, b, scale, residual = _operands(case)
    *_, s, p, d, g = case
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)     # these small samples split too
    items = outer.layout(x.shape, w.shape, s, p, d, g, _out_size(case), two_threads).items
    n0, _, fb0, _, t0, _ = zip(*items)
    shares = {"samples": n0, "blocks": fb0, "tiles": t0}
    assert len(items) == 2 and len(set(shares[split])) == 2   # the split this case is for
    counts, real_run = [], block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    results = []
    for threads in (1, two_threads):
        with backend.use_kernels("numba"), thread_policy.use_threads(threads), \
                block_threads.section():
            assert block_threads.workers() == threads
            results.append(_forward(case, x, w, b, True, scale, residual))
    assert counts == [1, 2]                     # one share, then the two shares above
    np.testing.assert_array_equal(results[0], results[1])
    assert _rel(results[1], _torch_fused(x, w, b, scale, residual, True, case)) < TOL


# shapes at the edges of the reads: the last output's last tap on the input's last element
# (no padding: x read in place, the last group's last plane), a kernel larger than the input
# with padding, one output, dilation reaching the far padding, groups at channel offsets
# with stride 3, outputs over one TILE with taps over K_CHUNK, a strided 1x1
GUARD_CASES = [
    (2, 6, 7, 9, 18, (3, 3), (1, 1), (0, 0), (1, 1), 2),
    (1, 3, 2, 2, 7, (5, 5), (1, 1), (2, 2), (1, 1), 1),
    (1, 4, 5, 5, 20, (5, 5), (1, 1), (0, 0), (1, 1), 1),
    (1, 4, 5, 6, 17, (3, 3), (1, 1), (2, 3), (2, 3), 1),
    (2, 12, 8, 7, 24, (3, 3), (3, 2), (1, 0), (1, 1), 3),
    (1, 15, 40, 41, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 7, 5, 6, 70, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    (1, 3, 1, 13, 33, (3, 3), (3, 3), (1, 1), (1, 1), 1),
    # several samples' small maps sharing a tile (outer.Layout.group), padded and not
    (7, 8, 5, 5, 20, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (5, 4, 6, 5, 16, (3, 3), (1, 2), (0, 0), (1, 1), 2),
]


@pytest.mark.parametrize("most", [4, 1])
@pytest.mark.parametrize("case", GUARD_CASES)
def test_reads_and_writes_stay_inside_their_arrays(case, most):
    # most: the register blocks of AVX-512 (up to 64 filters) and of AVX2 (16 at a time,
    # each at its lane offset into the weights and partial sums), whatever this CPU has
    _check_inside_arrays(case, most)


@pytest.mark.parametrize("case", GUARD_CASES)
def test_relu_gate_writes_stay_inside_its_array(case):
    # a training forward's ReLU gate (mask=), written by the store beside each value: every
    # element set to out > 0, nothing past either end of the mask (bytes of 7 around it)
    x, w, b, _, _ = _operands(case, seed=3)
    *_, s, p, d, g = case
    shape = (x.shape[0], w.shape[0], *_out_size(case))
    size = int(np.prod(shape))
    buf = np.full(size + 2 * GUARD, 7, np.uint8)
    gate = buf[GUARD:GUARD + size].view(np.bool_).reshape(shape)
    out = outer.forward(x, w, b, s, p, d, g, shape[2:], True, mask=gate)
    assert (buf[:GUARD] == 7).all() and (buf[-GUARD:] == 7).all()
    assert np.isin(buf[GUARD:GUARD + size], (0, 1)).all()      # every element written
    np.testing.assert_array_equal(gate, out > 0)


@st.composite
def layers(draw):
    """Any legal convolution of small sizes: per-axis kernel 1-5, stride 1-3, padding 0-3,
    dilation 1-3, groups 1-3, 1-70 filters per group (one to two blocks of 64)."""
    k, s, p, d = ([draw(st.integers(lo, hi)) for _ in range(2)]
                  for lo, hi in ((1, 5), (1, 3), (0, 3), (1, 3)))
    size = [draw(st.integers(max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]),
                             max(1, d[i] * (k[i] - 1) + 1 - 2 * p[i]) + 9)) for i in range(2)]
    g, cg, fg = draw(st.integers(1, 3)), draw(st.integers(1, 20)), draw(st.integers(1, 70))
    return (draw(st.integers(1, 3)), g * cg, *size, g * fg, tuple(k), tuple(s), tuple(p),
            tuple(d), g)


@settings(max_examples=40, deadline=None)
@given(layers())
def test_any_layer_stays_inside_its_arrays_and_matches_torch(case):
    _check_inside_arrays(case, 1)


def _check_inside_arrays(case, most):
    """The kernel on operands, scratch and output that sit between guards: NaN around
    everything it reads (a read past an edge makes an output NaN: no ReLU here, and the
    output is checked finite), NaN in and around its scratch (a read of scratch it did not
    write shows as NaN too) and a sentinel around its output (a write past an edge changes
    a guard). Every output starts NaN, so one left unwritten shows too. The work is split
    as for two threads and run item by item, as one thread runs them, on the same scratch
    (what the next item finds there must not matter).

    Why no access can leave its array (outer_kernels.py's module docstring, "Bounds"): the
    input index xo + inb[p] + off[k] is at most (G - 1) C/G Hp Wp + ((Ho - 1) S_h + (KH - 1)
    D_h) Wp + (Wo - 1) S_w + (KW - 1) D_w + (C/G - 1) Hp Wp, inside C Hp Wp because
    outer._check_shapes holds (Ho - 1) S + (K - 1) D < H + 2P on both axes; the tail of
    the last position block repeats the last position; prod, buf and tmp are indexed by
    rows < tile (te - ts, a multiple of 6), taps < k_chunk and lanes < 64; a group of
    samples sharing a tile reads each sample's planes through the same offsets, and writes
    inb_g below the tile."""
    _, c, _, _, f, _, s, p, d, g = case
    x, w, b, scale, residual = _operands(case, seed=7)
    want = _torch_fused(x, w, b, scale, residual, False, case)
    ho, wo = _out_size(case)
    lay = outer.layout(x.shape, w.shape, s, p, d, g, (ho, wo), 2)
    assert lay.packed == (max(p) > 0)
    reach = ((g - 1) * (c // g) * lay.pitch[0] * lay.pitch[1]
             + int(lay.inb.max()) + int(lay.off.max()))
    assert reach < c * lay.pitch[0] * lay.pitch[1]         # the bound, on this layout
    arrays = {name: guarded(v) for name, v in (("x", x), ("w2", w.reshape(f, -1)),
                                                ("bias", b), ("scale", scale),
                                                ("residual", residual))}
    out_buf, out = guarded(np.full(want.shape, np.nan), fill=-1234.5)
    tile, k_chunk = lay.tile, min(outer.K_CHUNK, w[0].size)
    scratch = {name: guarded(np.full(size, np.nan)) for name, size in (
        ("x_in", lay.group * c * lay.pitch[0] * lay.pitch[1] if lay.packed else 1),
        ("prod", tile * kernels.FILTERS), ("buf", k_chunk * kernels.FILTERS),
        ("tmp", tile * kernels.FILTERS))}
    inb_size = max(tile, lay.inb.size)
    inb_buf = np.full(inb_size + 2 * GUARD, -7, np.int64)
    entered = np.full(1 + 2 * GUARD, -7, np.int64)   # raised as each item starts, nothing else
    for item in lay.items:
        kernels.forward_items(
            arrays["x"][1], arrays["w2"][1], g, *item, tile, lay.group, lay.off, lay.inb,
            inb_buf[GUARD:GUARD + inb_size], p, lay.pitch, lay.packed, scratch["x_in"][1],
            scratch["prod"][1], scratch["buf"][1], scratch["tmp"][1], out,
            arrays["scale"][1], arrays["bias"][1], True, arrays["residual"][1], False,
            np.zeros((0, 0, 0), bool), k_chunk, most, entered[GUARD:GUARD + 1])
    assert (guards(out_buf) == np.float32(-1234.5)).all()
    assert (guards(inb_buf) == -7).all()
    assert entered[GUARD] == 1 and (guards(entered) == -7).all()
    for name, (buf, _) in {**arrays, **scratch}.items():
        assert np.isnan(guards(buf)).all(), name
    assert np.isfinite(out).all()
    assert _rel(out, want) < TOL
    np.testing.assert_array_equal(out, _forward(case, x, w, b, False, scale, residual))


def test_noncontiguous_float64_byteswapped_and_read_only_operands():
    """outer.forward copies any layout and dtype to contiguous float32: the same bits as
    from those copies, a float32 result; read-only operands (a memory-mapped checkpoint's
    weights) are read in place; a batch of 0 gives an empty output."""
    case = CASES[5]
    check_operand_forms(lambda *args: _forward(case, *args), *_operands(case))


def test_plan_picks_outer_for_float32_inference_only(monkeypatch):
    """The plan runs the kernel for float32 inference forwards only: float64, float32 with
    float64 filters (which conv2d_forward promotes) and training forwards keep their exact
    kernels."""
    monkeypatch.setattr(conv_choice, "OUTER", True)
    case = (1, 16, 7, 7, 48, (3, 3), (2, 2), (1, 1), (1, 1), 1)   # stride 2: no Winograd
    x, w, b, _, _ = _operands(case)
    *_, s, p, d, g = case

    def kernel(dtype, training=False):
        with backend.use_kernels("numba"):
            return conv_choice.plan(x.shape, w.shape, s, p, d, g, _out_size(case), dtype,
                                    training=training).forward

    assert kernel(np.float32) == "outer"
    assert kernel(np.float64) != "outer" and kernel(np.float32, training=True) != "outer"
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w.astype(np.float64), b, s, p, d, g, keep_cache=False)
    assert out.dtype == np.float64
    assert _rel(out, _torch_fused(x, w, b, None, None, False, case)) < 1e-10


@pytest.mark.parametrize("change, message", [
    (lambda ops: {**ops, "w": ops["w"][:, :3]}, "groups"),            # C/G channels wrong
    (lambda ops: {**ops, "groups": 3}, "groups"),                     # F and C not by G
    (lambda ops: {**ops, "out_size": (4, 3)}, "reads past"),          # an output too many
    (lambda ops: {**ops, "bias": ops["bias"][:5]}, "bias"),
    (lambda ops: {**ops, "scale": ops["scale"][:1]}, "scale"),
    (lambda ops: {**ops, "residual": ops["residual"][:, :, :1]}, "residual"),
    (lambda ops: {**ops, "residual": ops["residual"][:1]}, "residual"),
])
def test_operands_of_the_wrong_shape_raise(change, message):
    """The kernels index without checks, so operands no convolution has are refused before
    they run, naming what is wrong (a shorter residual or bias was read past its end)."""
    case = (2, 8, 6, 6, 10, (3, 3), (2, 2), (1, 1), (1, 1), 2)
    x, w, b, scale, residual = _operands(case)
    ops = change({"w": w, "groups": 2, "out_size": _out_size(case), "bias": b,
                  "scale": scale, "residual": residual})
    with pytest.raises(ShapeError, match=message):
        outer.forward(x, ops["w"], ops["bias"], (2, 2), (1, 1), (1, 1), ops["groups"],
                      ops["out_size"], True, ops["scale"], ops["residual"])
