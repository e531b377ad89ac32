"""The filter transforms of Winograd F(m x m, 3 x 3), compiled: U = G g G^T for the forward
pass, the same for dx's flipped, transposed filters read straight from the layer's, and the
adjoint of the transform for the weight gradient (see winograd.py for the algorithm).

All run in float64 and take a range of filters (or channels), so winograd.py can split them
over the threads (volnet.runtime.block_threads); each has its innermost loops over a
contiguous run of channels or filters (vector code, contiguous stores). ``np.einsum`` did
the forward's in 290 ms for 512x512 filters; this takes ~4-9 ms (benchmarks/README.md,
fifth round and section 43).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# LLVM's fast-math flags of the Winograd kernels (here and winograd_tiles.py): reassociation
# and contraction let the transforms vectorise; not "nnan"/"ninf", under which LLVM may
# assume no NaN or infinity and fold away the ReLU's test that keeps a NaN output NaN
FAST_MATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def _points(taps, g, half, out, row):  # pragma: no cover - compiled
    """out[k*a + l, row, :] = sum_ij g[k, i] taps[3i + j, :] g[l, j]: the a x a points of
    one filter's (or one channel's) 3x3 taps, ``taps`` (9, n) float64 with the n channels (or
    filters) innermost; ``half`` (a, 3, n) is scratch. Both transforms below gather their
    taps into ``taps``, then call this."""
    a = g.shape[0]
    n = taps.shape[1]
    for k in range(a):
        for j in range(3):
            g0, g1, g2 = g[k, 0], g[k, 1], g[k, 2]
            dst = half[k, j]
            for c in range(n):
                dst[c] = g0 * taps[j, c] + g1 * taps[3 + j, c] + g2 * taps[6 + j, c]
    for k in range(a):
        for l in range(a):
            g0, g1, g2 = g[l, 0], g[l, 1], g[l, 2]
            h0, h1, h2 = half[k, 0], half[k, 1], half[k, 2]
            dst = out[k * a + l, row]
            for c in range(n):
                dst[c] = g0 * h0[c] + g1 * h1[c] + g2 * h2[c]


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def filter_points(w, g, out, f0, f1):  # pragma: no cover - compiled
    """out[k*a + l, f, c] = sum_ij g[k, i] w[f, c, i, j] g[l, j] for filters f in [f0, f1).

    ``w`` (F, C, 3, 3) float32, ``g`` (a, 3) float64; computed in float64, stored float32.
    One filter at a time, every stage a loop over its C channels (contiguous stores).
    """
    a = g.shape[0]
    n_c = w.shape[1]
    taps = np.empty((9, n_c), np.float64)
    half = np.empty((a, 3, n_c), np.float64)
    for f in range(f0, f1):
        for c in range(n_c):
            for t in range(9):
                taps[t, c] = w[f, c, t // 3, t % 3]
        _points(taps, g, half, out, f)


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def filter_points_adjoint(w, g, out, c0, c1):  # pragma: no cover - compiled
    """out[k*a + l, c, f] = sum_ij g[k, i] w[f, c, 2 - i, 2 - j] g[l, j] for channels c in
    [c0, c1): the transform of the flipped, transposed filters (dx as a convolution of
    dout, see conv_gemm.flipped_transpose) read straight from ``w``, with no flipped copy.

    ``w`` (F, C, 3, 3) float32, ``g`` (a, 3) float64; computed in float64, stored float32
    into ``out`` (a*a, C, F). One input channel at a time, every stage a loop over the F
    filters in the innermost loop (contiguous stores), as :func:`filter_points`.
    """
    a = g.shape[0]
    n_f = w.shape[0]
    taps = np.empty((9, n_f), np.float64)
    half = np.empty((a, 3, n_f), np.float64)
    for c in range(c0, c1):
        for f in range(n_f):
            for t in range(9):
                taps[t, f] = w[f, c, 2 - t // 3, 2 - t % 3]
        _points(taps, g, half, out, c)


@njit(nogil=True, cache=True, fastmath=FAST_MATH)
def filter_grads(du, g, dw, f0, f1):  # pragma: no cover - compiled
    """dw[f, c, i, j] = sum_kl g[k, i] (sum_s du[s, k*a + l, f, c]) g[l, j], f in [f0, f1).

    The adjoint of :func:`filter_points`: ``du`` (S, a*a, F, C) float32 holds S partial
    sums (one per thread), added here in float64; ``dw`` (F, C, 3, 3) float32. Every
    stage is a loop over the C channels innermost (vector code); the 9 taps of a channel,
    9 floats apart in ``dw``, are gathered from the (9, C) result at the end (the
    reduction over l innermost ran scalar: 16 ms for 512x512 filters, now 7.6, most of it
    reading ``du`` from memory; benchmarks/README.md section 43).
    """
    n_s = du.shape[0]
    a = g.shape[0]
    n_c = du.shape[3]
    point = np.empty(n_c, np.float64)
    half = np.empty((3, a, n_c), np.float64)
    taps = np.empty((9, n_c), np.float64)
    for f in range(f0, f1):
        half[:] = 0.0
        for k in range(a):
            for l in range(a):
                src = du[0, k * a + l, f]
                for c in range(n_c):
                    point[c] = src[c]
                for s in range(1, n_s):
                    src = du[s, k * a + l, f]
                    for c in range(n_c):
                        point[c] += src[c]
                for i in range(3):
                    coef = g[k, i]
                    if coef != 0.0:
                        dst = half[i, l]
                        for c in range(n_c):
                            dst[c] += coef * point[c]
        taps[:] = 0.0
        for i in range(3):
            for j in range(3):
                dst = taps[i * 3 + j]
                for l in range(a):
                    coef = g[l, j]
                    if coef != 0.0:
                        src = half[i, l]
                        for c in range(n_c):
                            dst[c] += coef * src[c]
        for c in range(n_c):
            for t in range(9):
                dw[f, c, t // 3, t % 3] = taps[t, c]
