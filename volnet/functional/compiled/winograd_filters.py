"""The filter transforms of Winograd F(m x m, 3 x 3), compiled: U = G g G^T for the forward
pass and its adjoint for the weight gradient (see winograd.py for the algorithm).

Both run in float64 and take a range of filters, so winograd.py can split them over the
threads (volnet.runtime.block_threads); each loops over one filter's input channels in
the innermost loop (contiguous stores). ``np.einsum`` did the same in 290 ms for 512x512
filters; this takes ~9 ms (benchmarks/README.md, fifth round).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, fastmath=True)
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
        for k in range(a):
            for j in range(3):
                g0, g1, g2 = g[k, 0], g[k, 1], g[k, 2]
                dst = half[k, j]
                for c in range(n_c):
                    dst[c] = g0 * taps[j, c] + g1 * taps[3 + j, c] + g2 * taps[6 + j, c]
        for k in range(a):
            for l in range(a):
                g0, g1, g2 = g[l, 0], g[l, 1], g[l, 2]
                h0, h1, h2 = half[k, 0], half[k, 1], half[k, 2]
                dst = out[k * a + l, f]
                for c in range(n_c):
                    dst[c] = g0 * h0[c] + g1 * h1[c] + g2 * h2[c]


@njit(nogil=True, cache=True, fastmath=True)
def filter_grads(du, g, dw, f0, f1):  # pragma: no cover - compiled
    """dw[f, c, i, j] = sum_kl g[k, i] (sum_s du[s, k*a + l, f, c]) g[l, j], f in [f0, f1).

    The adjoint of :func:`filter_points`: ``du`` (S, a*a, F, C) float32 holds S partial
    sums (one per thread), added here in float64; ``dw`` (F, C, 3, 3) float32.
    """
    n_s = du.shape[0]
    a = g.shape[0]
    n_c = du.shape[3]
    point = np.empty(n_c, np.float64)
    half = np.empty((3, a, n_c), np.float64)
    for f in range(f0, f1):
        half[:] = 0.0
        for k in range(a):
            for l in range(a):
                point[:] = 0.0
                for s in range(n_s):
                    src = du[s, k * a + l, f]
                    for c in range(n_c):
                        point[c] += src[c]
                for i in range(3):
                    coef = g[k, i]
                    if coef != 0.0:
                        dst = half[i, l]
                        for c in range(n_c):
                            dst[c] += coef * point[c]
        for i in range(3):
            for j in range(3):
                for c in range(n_c):
                    acc = 0.0
                    for l in range(a):
                        acc += half[i, l, c] * g[l, j]
                    dw[f, c, i, j] = acc
