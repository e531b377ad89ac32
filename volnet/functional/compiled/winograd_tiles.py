"""The compiled tile transforms of Winograd F(4x4, 3x3) (see winograd.py for the algorithm).

Each kernel transforms one block of tile rows ``[q0, q1)`` on the calling thread and
releases the GIL (``nogil``): winograd.py runs blocks on several Python threads at once,
each doing its own transforms and its own one-thread BLAS products, so the transforms
and the products never wait for each other's worker threads (measured in
benchmarks/README.md: numba's OpenMP threads and OpenBLAS's spinning workers, taking
turns on two cores, made a 16x64x56x56 forward 56-85 ms against 33 ms for its parts).

The transforms are written out (``input_tiles4``, ``grad_tiles4``, ``output_tiles4``) and
run in float32 (their entries are small integers and powers of 2); the filter transforms,
in winograd_filters.py, in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(nogil=True, cache=True, fastmath=True)
def input_tiles4(x, out, q0, q1, rows0, cols0, d, ph, pw):  # pragma: no cover - compiled
    """BT of F(4x4,3x3) on every input tile: V (36, C, tiles), written out.

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
    zero = np.zeros(w, np.float32)                  # a row above or below the image
    for c in range(n_ch):
        part = np.zeros((6, wb), np.float32)        # columns outside [lo, hi) stay zero
        for qq in range(nq):
            n = (q0 + qq) // th_count
            th = (q0 + qq) % th_count
            top = rows0[th] - ph
            r0 = x[n, c, top] if 0 <= top < h else zero
            r1 = x[n, c, top + d] if 0 <= top + d < h else zero
            r2 = x[n, c, top + 2 * d] if 0 <= top + 2 * d < h else zero
            r3 = x[n, c, top + 3 * d] if 0 <= top + 3 * d < h else zero
            r4 = x[n, c, top + 4 * d] if 0 <= top + 4 * d < h else zero
            r5 = x[n, c, top + 5 * d] if 0 <= top + 5 * d < h else zero
            for u in range(lo, hi):                 # BT along H, read straight from the rows
                t0, t1, t2, t3, t4, t5 = _bt4(r0[u - pw], r1[u - pw], r2[u - pw], r3[u - pw],
                                              r4[u - pw], r5[u - pw])
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


@njit(nogil=True, cache=True, fastmath=True)
def grad_tiles4(dout, out, q0, q1, rows0, cols0, d):  # pragma: no cover - compiled
    """A = AT^T of F(4x4,3x3) on every dout tile, written out: 4x4 tiles to 6x6 points."""
    n_f, ho, wo = dout.shape[1:]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    for f in range(n_f):
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


@njit(nogil=True, cache=True, fastmath=True)
def output_tiles4(prod, out, scale, bias, relu, q0, q1, rows0, cols0, d,
                  f0):  # pragma: no cover - compiled
    """out[n, f0 + f, r0 + d*i, c0 + d*j] = bias[f0 + f] + scale[f0 + f] *
    sum_kl AT[i, k] AT[j, l] M[k*6 + l, f, p] with M = ``prod``, the products of the filters
    ``f0 .. f0 + prod.shape[1]``; max(0, that) with ``relu``: the layer's batch norm and ReLU
    in the same row stores. AT of F(4x4,3x3), written out."""
    ho, wo = out.shape[2:]
    n_f = prod.shape[1]
    th_count, tw_count = rows0.size, cols0.size
    nq = q1 - q0
    wb = wo
    for tw in range(tw_count):
        wb = max(wb, cols0[tw] + 3 * d + 1)
    for f in range(n_f):
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
                    dst = out[n, f0 + f, row]
                    sf, bf = scale[f0 + f], bias[f0 + f]
                    if relu:
                        for col in range(wo):
                            v = res[i, col] * sf + bf
                            dst[col] = v if v > 0 else 0.0
                    else:
                        for col in range(wo):
                            dst[col] = res[i, col] * sf + bf
