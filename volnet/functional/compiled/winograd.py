"""Winograd minimal filtering F(m x m, 3 x 3) for stride-1 3x3 convolutions (Lavin & Gray 2016).

A 3x3 correlation of an (m+2) x (m+2) input tile ``d`` with a filter ``g`` gives an
m x m output tile ``Y = AT [(G g G^T) * (BT d BT^T)] AT^T``; ``*`` is element-wise over
the a x a = (m+2)^2 transform points. Summed over input channels, the element-wise
stage becomes one matrix product per transform point: ``M[t] = U[t] @ V[t]`` with
``U[t]`` (F, C) the transformed filters and ``V[t]`` (C, tiles) the transformed input
tiles. F(4x4) does 36 products of 1/16 of the output positions each (4x fewer
multiplications than direct), F(2x2) 16 of 1/4 (2.25x fewer).

The tile transforms are compiled loops (numba, parallel over channels x tile rows);
the products are np.matmul (BLAS). The batch is processed in blocks of tile rows so
the transformed tiles stay in cache between the transforms and the product.

Dilation ``D`` is handled by the sub-grid identity: the outputs ``o = s + D*t`` of one
residue ``s`` (per axis) only read inputs ``s + D*(t + k)``, an undilated 3x3 conv on a
sub-grid, so tiles are laid on each sub-grid and read/written with step ``D``.

Gradients: dx of a stride-1 conv is this forward on dout with flipped, transposed
filters (see conv_gemm.input_grad_as_conv); dw is the transposed algorithm
``dg = G^T [sum over tiles (A dY A^T) * (BT d BT^T)] G`` with one product per point.
F(4x4)'s tile transforms are written out (``input_tiles4``, ``grad_tiles4``,
``output_tiles4``); the matrix-driven ``tile_transform``/``untile_transform`` serve F(2x2).
Tile transforms run in float32 (their entries are small integers); the filter transform
and dw's back-transform in float64. volnet only uses Winograd for float32 layers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_BT = {2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
       4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)}
_G = {2: np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
      4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                   [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)}
_AT = {2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
       4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                    [0, 1, -1, 8, -8, 1]], np.float64)}
_A = {m: np.ascontiguousarray(at.T) for m, at in _AT.items()}   # dout tiles -> transform points
# the tile transforms run in float32 (their entries are small integers and powers of 2)
_BT32, _AT32, _A32 = ({m: t.astype(np.float32) for m, t in mats.items()} for mats in (_BT, _AT, _A))

BLOCK_BYTES = 16 * 2**20     # transformed tiles + products per block: inside the 48 MB L3


@njit(parallel=True, cache=True, fastmath=True)
def tile_transform(x, mat, out, q0, q1, rows0, cols0, d, ph, pw):  # pragma: no cover - compiled
    """out[k*a + l, c, p] = sum_ij mat[k, i] mat[l, j] x[n, c, r0 + d*i - ph, c0 + d*j - pw].

    ``x`` (N, C, H, W) float32, read as zero outside; ``mat`` (a, r) float64 maps an r x r
    tile to a x a points (BT for input tiles, A = AT^T for output-gradient tiles); tile
    row ``q`` in [q0, q1) is image q // TH, tile row q % TH; p = (q - q0) * TW + tw.
    One channel per task: its tiles are gathered once into (r, r, tiles), then both
    transform stages run over contiguous rows of all tiles of the block (vectorised).
    """
    n_ch, h, w = x.shape[1:]
    a, r = mat.shape
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    npos = nq * tw_count
    wb = 0
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + d * (r - 1) + 1)
    lo, hi = max(0, pw), min(wb, w + pw)
    step = cols0[1] - cols0[0] if d == 1 and tw_count > 1 else 0
    for c in prange(n_ch):
        tiles = np.zeros((r, r, npos), np.float32)
        padded = np.zeros(wb, np.float32)           # one input row, zero outside the image
        for qq in range(nq):
            n = (q0 + qq) // th_count
            th = (q0 + qq) % th_count
            for i in range(r):
                row = rows0[th] + d * i - ph
                if 0 <= row < h:
                    src = x[n, c, row]
                    for u in range(lo, hi):
                        padded[u] = src[u - pw]
                    for j in range(r):
                        dst = tiles[i, j, qq * tw_count:(qq + 1) * tw_count]
                        if step:                    # undilated: a strided copy
                            for tw in range(tw_count):
                                dst[tw] = padded[step * tw + j]
                        else:
                            for tw in range(tw_count):
                                dst[tw] = padded[cols0[tw] + d * j]
        part = np.zeros((a, r, npos), np.float32)               # transformed along H
        for k in range(a):
            for i in range(r):
                coef = mat[k, i]
                if coef != 0.0:
                    for j in range(r):
                        src, dst = tiles[i, j], part[k, j]
                        for p in range(npos):
                            dst[p] += coef * src[p]
        acc = np.empty(npos, np.float32)
        for k in range(a):
            for l in range(a):
                acc[:] = 0.0
                for j in range(r):
                    coef = mat[l, j]
                    if coef != 0.0:
                        src = part[k, j]
                        for p in range(npos):
                            acc[p] += coef * src[p]
                dst = out[k * a + l, c]
                for p in range(npos):
                    dst[p] = acc[p]


@njit(parallel=True, cache=True, fastmath=True)
def untile_transform(prod, at, out, bias, q0, q1, rows0, cols0, d):  # pragma: no cover
    """out[n, f, r0 + d*i, c0 + d*j] = bias[f] + sum_kl at[i, k] at[j, l] prod[k*a + l, f, p]."""
    n_f, ho, wo = out.shape[1:]
    m, a = at.shape
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    npos = nq * tw_count
    img = np.empty(npos, np.int64)
    row0 = np.empty(npos, np.int64)
    col0 = np.empty(npos, np.int64)
    for p in range(npos):
        q = q0 + p // tw_count
        img[p], row0[p], col0[p] = q // th_count, rows0[q % th_count], cols0[p % tw_count]
    for f in prange(n_f):
        part = np.zeros((a, m, npos), np.float32)               # transformed along W
        for k in range(a):
            for l in range(a):
                src = prod[k * a + l, f]
                for j in range(m):
                    coef = at[j, l]
                    if coef != 0.0:
                        dst = part[k, j]
                        for p in range(npos):
                            dst[p] += coef * src[p]
        acc = np.empty(npos, np.float32)
        for i in range(m):
            for j in range(m):
                acc[:] = bias[f]
                for k in range(a):
                    coef = at[i, k]
                    if coef != 0.0:
                        src = part[k, j]
                        for p in range(npos):
                            acc[p] += coef * src[p]
                for p in range(npos):
                    row, col = row0[p] + d * i, col0[p] + d * j
                    if row < ho and col < wo:
                        out[img[p], f, row, col] = acc[p]


_F2, _F4, _F5, _F8 = np.float32(2), np.float32(4), np.float32(5), np.float32(8)


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


@njit(parallel=True, cache=True, fastmath=True)
def input_tiles4(x, out, q0, q1, rows0, cols0, d, ph, pw):  # pragma: no cover - compiled
    """:func:`tile_transform` with BT of F(4x4,3x3), written out.

    Per tile row: the 6 input rows (step d) are transformed along H over their whole
    width (contiguous, vectorised), then each tile's 6 columns (step d) along W.
    """
    n_ch, h, w = x.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    wb = 0
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 5 * d + 1)
    lo, hi = max(0, pw), min(wb, w + pw)
    for c in prange(n_ch):
        rows = np.zeros((6, wb), np.float32)
        part = np.empty((6, wb), np.float32)
        for qq in range(nq):
            n = (q0 + qq) // th_count
            th = (q0 + qq) % th_count
            for i in range(6):
                row = rows0[th] + d * i - ph
                if 0 <= row < h:
                    src = x[n, c, row]
                    for u in range(lo, hi):
                        rows[i, u] = src[u - pw]
                else:
                    rows[i, :] = 0.0
            for u in range(wb):
                t0, t1, t2, t3, t4, t5 = _bt4(rows[0, u], rows[1, u], rows[2, u], rows[3, u],
                                              rows[4, u], rows[5, u])
                part[0, u], part[1, u], part[2, u] = t0, t1, t2
                part[3, u], part[4, u], part[5, u] = t3, t4, t5
            base = qq * tw_count
            for k in range(6):
                pk = part[k]
                for tw in range(tw_count):
                    u = cols0[tw]
                    t0, t1, t2, t3, t4, t5 = _bt4(pk[u], pk[u + d], pk[u + 2 * d],
                                                  pk[u + 3 * d], pk[u + 4 * d], pk[u + 5 * d])
                    p = base + tw
                    out[k * 6, c, p], out[k * 6 + 1, c, p], out[k * 6 + 2, c, p] = t0, t1, t2
                    out[k * 6 + 3, c, p], out[k * 6 + 4, c, p], out[k * 6 + 5, c, p] = t3, t4, t5


@njit(inline="always")
def _a4(y0, y1, y2, y3):  # pragma: no cover - compiled
    """A = AT^T of F(4x4,3x3) applied to one line of 4 output gradients."""
    s, t = y0 + y2, y1 + y3
    u, v = y0 + _F4 * y2, _F2 * y1 + _F8 * y3
    return y0, s + t, s - t, u + v, u - v, y3


@njit(parallel=True, cache=True, fastmath=True)
def grad_tiles4(dout, out, q0, q1, rows0, cols0, d):  # pragma: no cover - compiled
    """:func:`tile_transform` with A of F(4x4,3x3), written out: dout 4x4 tiles to 6x6 points."""
    n_f, ho, wo = dout.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    for f in prange(n_f):
        rows = np.zeros((4, wb), np.float32)
        part = np.empty((6, wb), np.float32)
        for qq in range(nq):
            n = (q0 + qq) // th_count
            th = (q0 + qq) % th_count
            for i in range(4):
                row = rows0[th] + d * i
                if row < ho:
                    src = dout[n, f, row]
                    for u in range(wo):
                        rows[i, u] = src[u]
                else:
                    rows[i, :] = 0.0
            for u in range(wb):
                t0, t1, t2, t3, t4, t5 = _a4(rows[0, u], rows[1, u], rows[2, u], rows[3, u])
                part[0, u], part[1, u], part[2, u] = t0, t1, t2
                part[3, u], part[4, u], part[5, u] = t3, t4, t5
            base = qq * tw_count
            for k in range(6):
                pk = part[k]
                for tw in range(tw_count):
                    u = cols0[tw]
                    t0, t1, t2, t3, t4, t5 = _a4(pk[u], pk[u + d], pk[u + 2 * d], pk[u + 3 * d])
                    p = base + tw
                    out[k * 6, f, p], out[k * 6 + 1, f, p], out[k * 6 + 2, f, p] = t0, t1, t2
                    out[k * 6 + 3, f, p], out[k * 6 + 4, f, p], out[k * 6 + 5, f, p] = t3, t4, t5


@njit(parallel=True, cache=True, fastmath=True)
def output_tiles4(prod, out, bias, q0, q1, rows0, cols0, d):  # pragma: no cover - compiled
    """:func:`untile_transform` with AT of F(4x4,3x3), written out, row stores."""
    n_f, ho, wo = out.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    for f in prange(n_f):
        part = np.empty((6, 4, tw_count), np.float32)
        res = np.empty((4, wb), np.float32)
        for qq in range(nq):
            n = (q0 + qq) // th_count
            th = (q0 + qq) % th_count
            base = qq * tw_count
            for k in range(6):
                for tw in range(tw_count):
                    p = base + tw
                    o0, o1, o2, o3 = _at4(prod[k * 6, f, p], prod[k * 6 + 1, f, p],
                                          prod[k * 6 + 2, f, p], prod[k * 6 + 3, f, p],
                                          prod[k * 6 + 4, f, p], prod[k * 6 + 5, f, p])
                    part[k, 0, tw], part[k, 1, tw], part[k, 2, tw], part[k, 3, tw] = o0, o1, o2, o3
            for j in range(4):
                for tw in range(tw_count):
                    o0, o1, o2, o3 = _at4(part[0, j, tw], part[1, j, tw], part[2, j, tw],
                                          part[3, j, tw], part[4, j, tw], part[5, j, tw])
                    col = cols0[tw] + d * j
                    res[0, col], res[1, col], res[2, col], res[3, col] = o0, o1, o2, o3
            for i in range(4):
                row = rows0[th] + d * i
                if row < ho:
                    dst = out[n, f, row]
                    for col in range(wo):
                        dst[col] = res[i, col] + bias[f]


def tile_starts(length: int, m: int, d: int) -> np.ndarray:
    """First output index of every m-tile along one axis, tiles laid on each of the d sub-grids."""
    starts = [s + d * t for s in range(d) for t in range(0, len(range(s, length, d)), m)]
    return np.array(starts, dtype=np.int64)


def filter_transform(w: np.ndarray, m: int) -> np.ndarray:
    """U (a*a, F, C) float32 = G g G^T for every filter, computed in float64."""
    g = _G[m]
    u = np.einsum("ki,fcij,lj->klfc", g, w.astype(np.float64), g, optimize=True)
    a = m + 2
    return np.ascontiguousarray(u.reshape(a * a, *w.shape[:2]), dtype=np.float32)


class _Blocks:
    """Tile grid of one layer and the reusable buffers of one block of tile rows."""

    def __init__(self, n, out_size, m, d, widths):
        self.m, self.a, self.d = m, m + 2, d
        self.rows0, self.cols0 = tile_starts(out_size[0], m, d), tile_starts(out_size[1], m, d)
        self.total = n * self.rows0.size
        tw = self.cols0.size
        per_q = self.a * self.a * tw * 4 * sum(widths)
        self.per_block = int(max(1, min(self.total, BLOCK_BYTES // per_q)))
        cap = self.a * self.a * self.per_block * tw
        self.widths = widths
        self.bufs = [np.empty(cap * c, dtype=np.float32) for c in widths]

    def __iter__(self):
        tw = self.cols0.size
        for q0 in range(0, self.total, self.per_block):
            q1 = min(self.total, q0 + self.per_block)
            p = (q1 - q0) * tw
            views = [buf[:self.a * self.a * c * p].reshape(self.a * self.a, c, p)
                     for buf, c in zip(self.bufs, self.widths)]
            yield q0, q1, views


def _input_points(x, v, q0, q1, blocks, padding, fast):
    """V (a*a, C, tiles) of one block of tile rows."""
    if fast:
        input_tiles4(x, v, q0, q1, blocks.rows0, blocks.cols0, blocks.d, padding[0], padding[1])
    else:
        tile_transform(x, _BT32[blocks.m], v, q0, q1, blocks.rows0, blocks.cols0, blocks.d,
                       padding[0], padding[1])


def forward(x, w, bias, padding, dilation, out_size, m):
    """(N, F, Ho, Wo) float32 stride-1 3x3 correlation of x with w plus bias (None: no bias)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, c = x.shape[:2]
    f = w.shape[0]
    d = dilation[0]
    u = filter_transform(w, m)
    b = np.zeros(f, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    out = np.empty((n, f, *out_size), dtype=np.float32)
    blocks = _Blocks(n, out_size, m, d, (c, f))
    fast = m == 4                       # the written-out F(4x4) transforms
    for q0, q1, (v, prod) in blocks:
        _input_points(x, v, q0, q1, blocks, padding, fast)
        np.matmul(u, v, out=prod)
        if fast:
            output_tiles4(prod, out, b, q0, q1, blocks.rows0, blocks.cols0, d)
        else:
            untile_transform(prod, _AT32[m], out, b, q0, q1, blocks.rows0, blocks.cols0, d)
    return out


def weight_grad(x, dout, padding, dilation, m):
    """dw (F, C, 3, 3) float32 of the stride-1 3x3 correlation, by the transposed algorithm."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dout = np.ascontiguousarray(dout, dtype=np.float32)
    n, c = x.shape[:2]
    f = dout.shape[1]
    d = dilation[0]
    a = m + 2
    blocks = _Blocks(n, dout.shape[2:], m, d, (c, f))
    du = np.zeros((a * a, f, c), dtype=np.float32)
    for q0, q1, (v, ybar) in blocks:
        _input_points(x, v, q0, q1, blocks, padding, m == 4)
        if m == 4:
            grad_tiles4(dout, ybar, q0, q1, blocks.rows0, blocks.cols0, d)
        else:
            tile_transform(dout, _A32[m], ybar, q0, q1, blocks.rows0, blocks.cols0, d, 0, 0)
        du += np.matmul(ybar, v.transpose(0, 2, 1))
    g = _G[m]
    dw = np.einsum("ki,klfc,lj->fcij", g, du.reshape(a, a, f, c).astype(np.float64), g,
                   optimize=True)
    return dw.astype(np.float32)
