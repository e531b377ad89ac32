"""The compiled tile transforms of Winograd F(4x4, 3x3) (see winograd.py for the algorithm).

Each kernel transforms one block of tile rows ``[q0, q1)`` on the calling thread and
releases the GIL (``nogil``): winograd.py runs blocks on several Python threads at once,
each doing its own transforms and its own one-thread BLAS products, so the transforms
and the products never wait for each other's worker threads (measured in
benchmarks/README.md: numba's OpenMP threads and OpenBLAS's spinning workers, taking
turns on two cores, made a 16x64x56x56 forward 56-85 ms against 33 ms for its parts).

Layout: transformed tiles and products are 36 point planes, each a (channels, tiles)
matrix flattened, ``PLANE_PAD`` floats further apart than their size (winograd.py): planes
a multiple of 4 KB apart put the 6 rows a pass writes at once in one cache set, which
halved the store rate; BLAS still sees contiguous matrices. (Channels outermost,
(C, 36, tiles), stored as fast but slowed the products 1.5-2.8x.)

Vectorised across tiles (undilated layers): each transform is split into its two 1-D
passes. The pass along H runs over whole rows (contiguous); its rows are laid end to end,
4 columns per tile, so the tiles' columns are every 4th value of one long array: a
stride-4 split of it (``_split4``, which LLVM turns into AVX-512 permutes) gives, per
tile column offset, one contiguous array over all the block's tiles, and the pass along
W runs over those, 8 tiles to a vector. The 6-wide input tiles overlap by 2 columns:
a tile's 5th and 6th columns are the next tile's 1st and 2nd, copied as two more
columns, except at the end of a tile row, where they are kept aside (``edge``) while the
row is transformed and patched into the copies. Channels go in groups of ``GROUP``
(``INPUT_GROUP``): their rows are transformed first, then their points written plane by
plane. Inner loops index flat arrays by unsigned offsets: a view per row made numba count
references atomically (a third of the time, by perf), and a signed index carries a
wraparound check that stops LLVM from vectorising; the passes over tiles are their own
functions (``*_lines``): inlined into the kernels, LLVM's vector loops sat behind hoisted
runtime checks that sent most of the work down their scalar loops (section 48). Dilated layers take
the same transforms tile by tile on their sub-grids (``*_subgrid``), on flat arrays and
unsigned offsets too (benchmarks/README.md section 44). benchmarks/README.md, section 31,
has the profile behind each of these choices.

The transforms are written out (``_bt4``, ``_a4``, ``_at4``) and run in float32 (their
entries are small integers and powers of 2); the filter transforms, in
winograd_filters.py, in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from volnet.functional.compiled.winograd_filters import FAST_MATH
from volnet.runtime.spin_wait import raise_flag

_F2, _F4, _F5, _F8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)
GROUP = 16      # channels whose rows are transformed before their points are written
INPUT_GROUP = 1   # ... in the input transform: its columns (6 per tile, 36 KB a channel
#                   at 256 tiles) stay in L1 between the split and the pass along W
#                   (1x64x56x56 forward, critical path: 4 channels 0.486 ms, 1: 0.449;
#                   dw's 252-tile blocks level from 1 to 16; README section 48)
_ZERO = np.float32(0)
# unsigned offsets: numba checks a signed index for wraparound, which stops LLVM from
# vectorising (it cannot prove the sum of two offsets is not negative); constants too,
# as uint64 + int64 is float64 under NumPy's rules
_U1, _U2, _U3, _U4, _U5 = (np.uint64(i) for i in range(1, 6))


@njit(inline="always")
def _bt4(d0, d1, d2, d3, d4, d5):  # pragma: no cover - compiled
    """BT of F(4x4,3x3) applied to one line of 6 inputs (float32 in, float32 out)."""
    return (_F4 * d0 - _F5 * d2 + d4, d3 + d4 - _F4 * (d1 + d2), _F4 * (d1 - d2) - d3 + d4,
            _F2 * (d3 - d1) - d2 + d4, _F2 * (d1 - d3) - d2 + d4, _F4 * d1 - _F5 * d3 + d5)


@njit(inline="always")
def _at4(m0, m1, m2, m3, m4, m5):  # pragma: no cover - compiled
    """AT of F(4x4,3x3) applied to one line of 6 transform points."""
    s, t = m1 + m2, m1 - m2
    u, v = m3 + m4, m3 - m4
    return m0 + s + u, t + _F2 * v, s + _F4 * u, t + _F8 * v + m5


@njit(inline="always")
def _a4(y0, y1, y2, y3):  # pragma: no cover - compiled
    """A = AT^T of F(4x4,3x3) applied to one line of 4 output gradients."""
    s, t = y0 + y2, y1 + y3
    u, v = y0 + _F4 * y2, _F2 * y1 + _F8 * y3
    return y0, s + t, s - t, u + v, u - v, y3


@njit(inline="always")
def _row(plane, r, h, w):  # pragma: no cover - compiled
    """(offset, inside) of row ``r`` of a flattened (h, w) map starting at row ``plane``:
    a row outside the map has the offset of the nearest row inside (any valid offset
    would do), its values replaced by zeros with a select."""
    return uint64((plane + min(max(r, 0), h - 1)) * w), 0 <= r < h


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _split4(src, a, n):  # pragma: no cover - compiled
    """a[j, p] = src[4 * p + j] for j < 4, p < n: column j of each of n 4-wide tiles laid
    end to end. Its own function on array views: so compiled, LLVM turns it into AVX-512
    permutes; inlined into the callers' loops, or on unsigned offsets, it stayed scalar."""
    for p in range(n):
        a[0, p], a[1, p], a[2, p], a[3, p] = src[4 * p], src[4 * p + 1], src[4 * p + 2], \
            src[4 * p + 3]


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _merge4(a, dst, n):  # pragma: no cover - compiled
    """dst[4 * p + j] = a[j, p] for j < 4, p < n: _split4's inverse (4-wide tiles' columns
    back into rows), AVX-512 permutes as _split4."""
    for p in range(n):
        dst[4 * p], dst[4 * p + 1], dst[4 * p + 2], dst[4 * p + 3] = a[0, p], a[1, p], \
            a[2, p], a[3, p]


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _bt4_lines(src, s0, ss, dst, d0, ds, n):  # pragma: no cover - compiled
    """dst[d0 + l * ds + p] = (BT of the 6 values src[s0 + k * ss + p], k < 6)[l] for
    l < 6, p < n: the input transform's pass along W over n tiles, its own function as
    :func:`_at4_lines` (same reason)."""
    for p in range(uint64(n)):
        at = s0 + p
        t0, t1, t2, t3, t4, t5 = _bt4(src[at], src[ss + at], src[_U2 * ss + at],
                                      src[_U3 * ss + at], src[_U4 * ss + at],
                                      src[_U5 * ss + at])
        dq = d0 + p
        dst[dq], dst[ds + dq], dst[_U2 * ds + dq] = t0, t1, t2
        dst[_U3 * ds + dq], dst[_U4 * ds + dq], dst[_U5 * ds + dq] = t3, t4, t5


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def input_tiles4(x, out, q0, q1, rows0, cols0, d, ph, pw, c_lo, c_hi,
                 entered):  # pragma: no cover
    """BT of F(4x4,3x3) on every input tile of the block, channels ``[c_lo, c_hi)``: V,
    36 point planes ``out[t, c * tiles + p]`` (``out`` (36, >= C * tiles)), written out.
    (A channel range lets threads transform one shared block, each its channels.)

    Tile p = (q - q0) * cols0.size + (its column); its 6x6 inputs start at row
    rows0[q % rows0.size] - ph and column cols0[...] - pw of image q // rows0.size, with
    step d; inputs outside the map are zero. ``entered`` (int64, one element or empty):
    raised to 1 as the kernel starts (block_threads.ENTERED).
    """
    raise_flag(entered)
    if d != 1:
        _input_subgrid(x, out, q0, q1, rows0, cols0, d, ph, pw, c_lo, c_hi)
        return
    n_ch, h, w = x.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    row = 4 * tw_count                          # a tile row's columns, end to end
    cnt = max(0, min(w, row + 2 - pw))          # input columns inside the tiles
    x1, o1 = x.reshape(-1), out.reshape(-1)
    cs = n_p + 2                                # a row's columns split, per tile column
    span = 4 * cs                               # >= nq * row + 2 + pw: one row of part
    part = np.zeros(6 * span, np.float32)       # a channel's 6 rows; padding stays zero
    # cols[channel, j, k * cs + p]: column j of tile p in row k, split in ONE call per
    # channel (one per row, 6 array views, cost a third of the pass); j = 4, 5: columns
    # 0, 1 of tile p + 1 copied, patched at the end of each tile row with the row's own
    # 5th and 6th columns (kept aside in edge), so that the pass along W loads 6 plain
    # vectors: a select between two loads there compiled to gathers (30% of the pass,
    # benchmarks/README.md section 48); selects, not arithmetic, so that the transform
    # rounds as the tile-by-tile kernel
    cols = np.empty((INPUT_GROUP, 6, 6 * cs), np.float32)
    edge = np.zeros((6, nq, 2), np.float32)
    us, unp, ups, u6 = uint64(span), uint64(n_p), uint64(out.shape[1]), uint64(6 * cs)
    c1 = cols.reshape(-1)
    for c0 in range(c_lo, c_hi, INPUT_GROUP):
        count = min(INPUT_GROUP, c_hi - c0)
        for cc in range(count):
            for qq in range(nq):
                n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
                top, plane = rows0[th] - ph, (n * n_ch + c0 + cc) * h
                i0, m0 = _row(plane, top, h, w)
                i1, m1 = _row(plane, top + 1, h, w)
                i2, m2 = _row(plane, top + 2, h, w)
                i3, m3 = _row(plane, top + 3, h, w)
                i4, m4 = _row(plane, top + 4, h, w)
                i5, m5 = _row(plane, top + 5, h, w)
                b, nxt = uint64(qq * row + pw), (qq + 1) * row
                for k in range(6):
                    part[k * span + nxt], part[k * span + nxt + 1] = 0.0, 0.0
                # one loop over the whole row (it vectorises; split at the row's end it did
                # not): the last 2 columns land on the next row's first 2, moved to edge
                for u in range(cnt):
                    j = uint64(u)
                    t0, t1, t2, t3, t4, t5 = _bt4(
                        x1[i0 + j] if m0 else _ZERO, x1[i1 + j] if m1 else _ZERO,
                        x1[i2 + j] if m2 else _ZERO, x1[i3 + j] if m3 else _ZERO,
                        x1[i4 + j] if m4 else _ZERO, x1[i5 + j] if m5 else _ZERO)
                    at = b + j
                    part[at], part[us + at], part[_U2 * us + at] = t0, t1, t2
                    part[_U3 * us + at], part[_U4 * us + at], part[_U5 * us + at] = t3, t4, t5
                for k in range(6):
                    edge[k, qq, 0], edge[k, qq, 1] = part[k * span + nxt], \
                        part[k * span + nxt + 1]
                    part[k * span + nxt], part[k * span + nxt + 1] = 0.0, 0.0
            _split4(part, cols[cc], 6 * cs)
            cb = uint64(cc * 6 * 6 * cs)
            for k in range(6):
                s0 = cb + uint64(k * cs)
                for p in range(unp):
                    c1[_U4 * u6 + s0 + p] = c1[s0 + p + _U1]
                    c1[_U5 * u6 + s0 + p] = c1[u6 + s0 + p + _U1]
                for qq in range(nq):
                    e = s0 + uint64(qq * tw_count + tw_count - 1)
                    c1[_U4 * u6 + e], c1[_U5 * u6 + e] = edge[k, qq, 0], edge[k, qq, 1]
        for k in range(6):          # point rows outer: 6 planes written channel after channel
            for cc in range(count):
                _bt4_lines(c1, uint64(cc * 6 * 6 * cs + k * cs), u6, o1,
                           uint64(6 * k) * ups + uint64(c0 + cc) * unp, ups, n_p)


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _input_subgrid(x, out, q0, q1, rows0, cols0, d, ph, pw, c_lo,
                   c_hi):  # pragma: no cover - compiled
    """input_tiles4 tile by tile, for tiles on dilation sub-grids (inputs ``d`` apart)."""
    w = x.shape[3]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    wb = 0
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 5 * d + 1)
    lo, hi = max(0, pw), min(wb, w + pw)
    zero = np.zeros(w, np.float32)
    part = np.zeros((6, wb), np.float32)        # columns outside [lo, hi) stay zero
    # flat arrays, unsigned offsets (no wraparound checks: see the module docstring)
    p1, o1, ups, ud = part.reshape(-1), out.reshape(-1), uint64(out.shape[1]), uint64(d)
    uwb = uint64(wb)
    for c in range(c_lo, c_hi):
        for qq in range(nq):
            n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
            r0, r1, r2, r3, r4, r5 = _rows(x, n, c, rows0[th] - ph, d, 6, zero)
            src, dst = uint64(lo - pw), uint64(lo)
            for uu in range(uint64(max(0, hi - lo))):   # BT along H, straight from the rows
                u, at = src + uu, dst + uu
                t0, t1, t2, t3, t4, t5 = _bt4(r0[u], r1[u], r2[u], r3[u], r4[u], r5[u])
                p1[at], p1[uwb + at], p1[_U2 * uwb + at] = t0, t1, t2
                p1[_U3 * uwb + at], p1[_U4 * uwb + at], p1[_U5 * uwb + at] = t3, t4, t5
            base = uint64(c * n_p + qq * tw_count)
            for k in range(6):
                pk = p1[uint64(k * wb):]
                b = uint64(6 * k) * ups + base
                for tw in range(tw_count):
                    u = uint64(cols0[tw])
                    t0, t1, t2, t3, t4, t5 = _bt4(pk[u], pk[u + ud], pk[u + _U2 * ud],
                                                  pk[u + _U3 * ud], pk[u + _U4 * ud],
                                                  pk[u + _U5 * ud])
                    at = b + uint64(tw)
                    o1[at], o1[ups + at], o1[_U2 * ups + at] = t0, t1, t2
                    o1[_U3 * ups + at], o1[_U4 * ups + at], o1[_U5 * ups + at] = t3, t4, t5


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def grad_tiles4(dout, out, q0, q1, rows0, cols0, d):  # pragma: no cover - compiled
    """A = AT^T of F(4x4,3x3) on every dout tile of the block (4x4 tiles to 6x6 points):
    36 point planes ``out[t, f * tiles + p]``, written out; values outside the map are
    zero."""
    if d != 1:
        _grad_subgrid(dout, out, q0, q1, rows0, cols0, d)
        return
    n_f, ho, wo = dout.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    row = 4 * tw_count
    x1, o1 = dout.reshape(-1), out.reshape(-1)
    span = nq * row
    part = np.zeros(6 * span, np.float32)       # columns past wo stay zero
    # cols[filter, j, k * tiles + p]: a filter's 6 rows split in one call (as input_tiles4)
    cols = np.empty((GROUP, 4, 6 * n_p), np.float32)
    us, unp, ups, u6 = uint64(span), uint64(n_p), uint64(out.shape[1]), uint64(6 * n_p)
    c1 = cols.reshape(-1)
    for f0 in range(0, n_f, GROUP):
        count = min(GROUP, n_f - f0)
        for ff in range(count):
            for qq in range(nq):
                n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
                top, plane = rows0[th], (n * n_f + f0 + ff) * ho
                i0, m0 = _row(plane, top, ho, wo)
                i1, m1 = _row(plane, top + 1, ho, wo)
                i2, m2 = _row(plane, top + 2, ho, wo)
                i3, m3 = _row(plane, top + 3, ho, wo)
                b = uint64(qq * row)
                for u in range(wo):
                    j = uint64(u)
                    t0, t1, t2, t3, t4, t5 = _a4(
                        x1[i0 + j] if m0 else _ZERO, x1[i1 + j] if m1 else _ZERO,
                        x1[i2 + j] if m2 else _ZERO, x1[i3 + j] if m3 else _ZERO)
                    at = b + j
                    part[at], part[us + at], part[_U2 * us + at] = t0, t1, t2
                    part[_U3 * us + at], part[_U4 * us + at], part[_U5 * us + at] = t3, t4, t5
            _split4(part, cols[ff], 6 * n_p)
        for k in range(6):          # point rows outer: 6 planes written filter after filter
            for ff in range(count):
                a0 = uint64(ff * 24 * n_p + k * n_p)
                a1, a2, a3 = a0 + u6, a0 + _U2 * u6, a0 + _U3 * u6
                ob = uint64(6 * k) * ups + uint64(f0 + ff) * unp
                for p in range(n_p):
                    q = uint64(p)
                    t0, t1, t2, t3, t4, t5 = _a4(c1[a0 + q], c1[a1 + q], c1[a2 + q],
                                                 c1[a3 + q])
                    at = ob + q
                    o1[at], o1[ups + at], o1[_U2 * ups + at] = t0, t1, t2
                    o1[_U3 * ups + at], o1[_U4 * ups + at], o1[_U5 * ups + at] = t3, t4, t5


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _grad_subgrid(dout, out, q0, q1, rows0, cols0, d):  # pragma: no cover - compiled
    """grad_tiles4 tile by tile, for tiles on dilation sub-grids (outputs ``d`` apart)."""
    n_f, wo = dout.shape[1], dout.shape[3]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    zero = np.zeros(wo, np.float32)
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    part = np.zeros((6, wb), np.float32)
    # flat arrays, unsigned offsets (no wraparound checks: see the module docstring)
    p1, o1, ups, ud = part.reshape(-1), out.reshape(-1), uint64(out.shape[1]), uint64(d)
    uwb = uint64(wb)
    for f in range(n_f):
        for qq in range(nq):
            n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
            r0, r1, r2, r3, _, _ = _rows(dout, n, f, rows0[th], d, 4, zero)
            for u in range(uint64(wo)):
                t0, t1, t2, t3, t4, t5 = _a4(r0[u], r1[u], r2[u], r3[u])
                p1[u], p1[uwb + u], p1[_U2 * uwb + u] = t0, t1, t2
                p1[_U3 * uwb + u], p1[_U4 * uwb + u], p1[_U5 * uwb + u] = t3, t4, t5
            base = uint64(f * n_p + qq * tw_count)
            for k in range(6):
                pk = p1[uint64(k * wb):]
                b = uint64(6 * k) * ups + base
                for tw in range(tw_count):
                    u = uint64(cols0[tw])
                    t0, t1, t2, t3, t4, t5 = _a4(pk[u], pk[u + ud], pk[u + _U2 * ud],
                                                 pk[u + _U3 * ud])
                    at = b + uint64(tw)
                    o1[at], o1[ups + at], o1[_U2 * ups + at] = t0, t1, t2
                    o1[_U3 * ups + at], o1[_U4 * ups + at], o1[_U5 * ups + at] = t3, t4, t5


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _at4_lines(src, s0, ss, dst, d0, ds, n):  # pragma: no cover - compiled
    """dst[d0 + i * ds + p] = (AT of the 6 values src[s0 + l * ss + p], l < 6)[i] for i < 4,
    p < n: one pass of the output transform over n tiles. Its own function: inlined into
    output_tiles4's loops, LLVM's vector loop sat behind a hoisted runtime check that sent
    most of the work down the scalar loop (perf: 38% of the transform's samples on scalar
    instructions, 2% on vector ones; benchmarks/README.md section 48)."""
    for p in range(uint64(n)):
        at = s0 + p
        o0, o1, o2, o3 = _at4(src[at], src[ss + at], src[_U2 * ss + at], src[_U3 * ss + at],
                              src[_U4 * ss + at], src[_U5 * ss + at])
        dq = d0 + p
        dst[dq], dst[ds + dq], dst[_U2 * ds + dq], dst[_U3 * ds + dq] = o0, o1, o2, o3


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def output_tiles4(prod, n_f, out, scale, bias, residual, relu, q0, q1, rows0, cols0, d,
                  f0):  # pragma: no cover - compiled
    """out[n, f0 + f, r0 + d*i, c0 + d*j] = bias[f0 + f] + scale[f0 + f] *
    sum_kl AT[i, k] AT[j, l] M[k*6 + l, f * tiles + p] with M = ``prod`` (36 point planes),
    the products of the ``n_f`` filters ``f0 ..``, plus ``residual`` at the same place
    when it is not empty (an array of out's shape: a residual block's shortcut); max(0,
    that) with ``relu``: the layer's batch norm, the block's sum and its ReLU in the same
    row stores. AT of F(4x4,3x3), written out.

    Undilated: both passes run over all the block's tiles at once, into rows laid end to
    end, then copied to the output rows with the epilogue.
    """
    if d != 1:
        _output_subgrid(prod, n_f, out, scale, bias, residual, relu, q0, q1, rows0, cols0, d,
                        f0)
        return
    f_all, ho, wo = out.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    row = 4 * tw_count
    span = nq * row
    m1, o1 = prod.reshape(-1), out.reshape(-1)
    add = residual.size > 0
    r1 = residual.reshape(-1)
    # [f, k, j, p]: AT along each row k of the points (the order of the tile-by-tile
    # kernel: rows first, so both give the same roundings)
    half = np.empty(GROUP * 6 * 4 * n_p, np.float32)
    # one filter's outputs [j, i * tiles + p] (the pass along W runs over p, contiguous),
    # then merged to rows [i, tile row * row + column] (res) in one call: written straight
    # to res[i, 4 p + j], that pass compiled to scalar code, half of the transform
    # (benchmarks/README.md, section 48)
    cols = np.empty((4, 4 * n_p), np.float32)
    res = np.empty(4 * span, np.float32)
    unp, ups = uint64(n_p), uint64(prod.shape[1])
    c1, u4p = cols.reshape(-1), uint64(4 * n_p)
    for g0 in range(0, n_f, GROUP):
        count = min(GROUP, n_f - g0)
        for k in range(6):          # point rows outer: 6 planes read filter after filter
            for ff in range(count):
                _at4_lines(m1, uint64(6 * k) * ups + uint64(g0 + ff) * unp, ups, half,
                           uint64((ff * 6 + k) * 4 * n_p), unp, n_p)
        for ff in range(count):
            h0 = uint64(ff * 6 * 4 * n_p)
            s4 = _U4 * unp
            for j in range(4):
                _at4_lines(half, h0 + uint64(j) * unp, s4, c1, uint64(j) * u4p, unp, n_p)
            _merge4(cols, res, 4 * n_p)
            f = f0 + g0 + ff
            sf, bf = scale[f], bias[f]
            for qq in range(nq):
                n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
                for i in range(4):
                    r = rows0[th] + i
                    if r < ho:
                        dst = uint64(((n * f_all + f) * ho + r) * wo)
                        src = uint64(i * span + qq * row)
                        if add:         # the shortcut's sum after the bias (bias_add_'s order)
                            for col in range(wo):
                                v = res[src + uint64(col)] * sf + bf
                                v = v + r1[dst + uint64(col)]
                                o1[dst + uint64(col)] = 0.0 if relu and v <= 0 else v  # NaN passes
                        elif relu:
                            for col in range(wo):
                                v = res[src + uint64(col)] * sf + bf
                                o1[dst + uint64(col)] = 0.0 if v <= 0 else v  # NaN passes
                        else:
                            for col in range(wo):
                                o1[dst + uint64(col)] = res[src + uint64(col)] * sf + bf


@njit(inline="always")
def _rows(x, n, c, top, step, count, zero):  # pragma: no cover - compiled
    """The ``count`` (4 or 6) rows ``top + step * i`` of x[n, c]; ``zero`` outside the map."""
    h = x.shape[2]
    r0 = x[n, c, top] if 0 <= top < h else zero
    r1 = x[n, c, top + step] if 0 <= top + step < h else zero
    r2 = x[n, c, top + 2 * step] if 0 <= top + 2 * step < h else zero
    r3 = x[n, c, top + 3 * step] if 0 <= top + 3 * step < h else zero
    r4 = x[n, c, top + 4 * step] if count > 4 and 0 <= top + 4 * step < h else zero
    r5 = x[n, c, top + 5 * step] if count > 5 and 0 <= top + 5 * step < h else zero
    return r0, r1, r2, r3, r4, r5


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _output_subgrid(prod, n_f, out, scale, bias, residual, relu, q0, q1, rows0, cols0, d,
                    f0):  # pragma: no cover - compiled
    """output_tiles4 tile by tile, for tiles on dilation sub-grids (outputs ``d`` apart)."""
    ho, wo = out.shape[2:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    n_p = nq * tw_count
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    part = np.empty((6, 4, tw_count), np.float32)
    res = np.empty((4, wb), np.float32)
    # flat arrays, unsigned offsets (no wraparound checks: see the module docstring)
    m1, r1, ups, ud, uwb = prod.reshape(-1), res.reshape(-1), uint64(prod.shape[1]), \
        uint64(d), uint64(wb)
    a1, utw = part.reshape(-1), uint64(tw_count)
    u4 = _U4 * utw
    for f in range(n_f):
        for qq in range(nq):
            n, th = (q0 + qq) // th_count, (q0 + qq) % th_count
            base = uint64(f * n_p + qq * tw_count)
            for k in range(6):
                b = uint64(6 * k) * ups + base
                pk = uint64(k * 4 * tw_count)
                for tw in range(uint64(tw_count)):
                    at = b + tw
                    o0, o1, o2, o3 = _at4(m1[at], m1[ups + at], m1[_U2 * ups + at],
                                          m1[_U3 * ups + at], m1[_U4 * ups + at],
                                          m1[_U5 * ups + at])
                    h = pk + tw
                    a1[h], a1[utw + h], a1[_U2 * utw + h], a1[_U3 * utw + h] = o0, o1, o2, o3
            for j in range(4):
                hj = uint64(j * tw_count)
                for tw in range(uint64(tw_count)):
                    h = hj + tw
                    o0, o1, o2, o3 = _at4(a1[h], a1[u4 + h], a1[_U2 * u4 + h], a1[_U3 * u4 + h],
                                          a1[_U4 * u4 + h], a1[_U5 * u4 + h])
                    col = uint64(cols0[tw]) + ud * uint64(j)
                    r1[col], r1[uwb + col], r1[_U2 * uwb + col], r1[_U3 * uwb + col] = \
                        o0, o1, o2, o3
            sf, bf = scale[f0 + f], bias[f0 + f]
            for i in range(4):
                r = rows0[th] + d * i
                if r < ho:
                    dst = out[n, f0 + f, r]
                    src = r1[uint64(i) * uwb:]
                    if residual.size > 0:
                        add = residual[n, f0 + f, r]
                        for col in range(uint64(wo)):
                            v = src[col] * sf + bf
                            v = v + add[col]
                            dst[col] = 0.0 if relu and v <= 0 else v  # NaN passes
                    elif relu:
                        for col in range(uint64(wo)):
                            v = src[col] * sf + bf
                            dst[col] = 0.0 if v <= 0 else v  # NaN passes
                    else:
                        for col in range(uint64(wo)):
                            dst[col] = src[col] * sf + bf
