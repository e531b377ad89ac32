"""Batch norm over (N, C, S) in one compiled kernel per direction, optionally with the ReLU
that follows it fused in.

Each channel is handled by one thread from start to end (``prange`` over C): its
statistics pass brings the channel's values into cache and the pass that writes the
output re-reads them from there, so a training forward streams the input from memory
about once (the NumPy path makes six full-size passes). Sums accumulate in float64
(more exact than the NumPy path's float32 pairwise sums); only the helpers that sum
may reassociate (``fastmath={"reassoc"}``, which lets LLVM vectorise them).

The normalised value is computed as ``(x - mean_t) * scale_t + beta`` in the array's
own dtype, with ``scale_t = gamma / sqrt(var + eps)``, in forward and again in
backward by helpers compiled without fast-math, so the same expression gives the same
bits: the ReLU mask is recomputed in backward instead of being stored, and the cache
holds only the input, which the previous layer's output array occupies anyway.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from volnet.runtime.launch import kernel

_SUM = {"reassoc"}    # fast-math flags of the summing helpers (order of additions only)


@njit(fastmath=_SUM, cache=True)
def _sum(x, c):
    acc = 0.0
    for i in range(x.shape[0]):
        row = x[i, c]
        for j in range(row.shape[0]):
            acc += np.float64(row[j])
    return acc


@njit(fastmath=_SUM, cache=True)
def _sum_sq_dev(x, c, mu):
    acc = 0.0
    for i in range(x.shape[0]):
        row = x[i, c]
        for j in range(row.shape[0]):
            d = np.float64(row[j]) - mu
            acc += d * d
    return acc


@njit(fastmath=_SUM, cache=True)
def _sums_for_grads(x, g, c, mu):
    """(sum g, sum g * (x - mu)) over channel c."""
    sb = 0.0
    sg = 0.0
    for i in range(x.shape[0]):
        row = x[i, c]
        grow = g[i, c]
        for j in range(row.shape[0]):
            d = np.float64(grow[j])
            sb += d
            sg += d * (np.float64(row[j]) - mu)
    return sb, sg


@njit(cache=True)
def _affine(x, c, mu_t, sc_t, b_t, relu, out):
    """out[:, c] = (x - mu_t) * sc_t + b_t, rectified when ``relu`` (no fast-math)."""
    for i in range(x.shape[0]):
        row = x[i, c]
        orow = out[i, c]
        if relu:
            for j in range(row.shape[0]):
                y = (row[j] - mu_t) * sc_t + b_t
                orow[j] = 0 if y <= 0 else y  # noqa: FURB136 (NaN passes, as np.maximum does)
        else:
            for j in range(row.shape[0]):
                orow[j] = (row[j] - mu_t) * sc_t + b_t


@njit(fastmath=_SUM, cache=True)
def _masked_sums_for_grads(x, dout, c, mu_t, sc_t, b_t, mu):
    """:func:`_sums_for_grads` of g = dout where the recomputed (x - mu_t) * sc_t + b_t > 0,
    else 0 (the fused ReLU's gradient), without writing g out."""
    sb = 0.0
    sg = 0.0
    for i in range(x.shape[0]):
        row = x[i, c]
        drow = dout[i, c]
        for j in range(row.shape[0]):
            y = (row[j] - mu_t) * sc_t + b_t
            d = np.float64(drow[j]) if y > 0 else 0.0
            sb += d
            sg += d * (np.float64(row[j]) - mu)
    return sb, sg


@njit(cache=True)
def _masked_input_grad(x, dout, c, mu_t, sc_t, b_t, mu, k, a, b, batch_stats, dx):
    """dx[:, c] = k * (g - a - (x - mu) * b) (``batch_stats``) or k * g, g being dout
    masked as in :func:`_masked_sums_for_grads` (the mask recomputed with the forward's
    expression)."""
    for i in range(x.shape[0]):
        row = x[i, c]
        drow = dout[i, c]
        xrow = dx[i, c]
        if batch_stats:
            for j in range(row.shape[0]):
                y = (row[j] - mu_t) * sc_t + b_t
                g = np.float64(drow[j]) if y > 0 else 0.0
                xrow[j] = k * (g - a - (np.float64(row[j]) - mu) * b)
        else:
            for j in range(row.shape[0]):
                y = (row[j] - mu_t) * sc_t + b_t
                g = np.float64(drow[j]) if y > 0 else 0.0
                xrow[j] = k * g


@kernel
def forward_train(x, gamma, beta, eps, relu, out, mean, var, inv_std, mean_t, scale_t):
    """Batch statistics and the normalised (optionally rectified) output, per channel.

    x, out: (N, C, S); gamma, beta, mean_t, scale_t: (C,) in x's dtype; mean, var,
    inv_std: (C,) float64 outputs (var is the biased batch variance).
    """
    n, ch, s = x.shape
    m = n * s
    for c in prange(ch):
        mu = _sum(x, c) / m
        v = _sum_sq_dev(x, c, mu) / m
        inv = 1.0 / np.sqrt(v + eps)
        mean[c] = mu
        var[c] = v
        inv_std[c] = inv
        mean_t[c] = mu
        scale_t[c] = gamma[c] * inv
        _affine(x, c, mean_t[c], scale_t[c], beta[c], relu, out)


@kernel
def apply(x, mean_t, scale_t, beta, relu, out):
    """out = (x - mean_t) * scale_t + beta per channel, rectified when ``relu`` (inference)."""
    for c in prange(x.shape[1]):
        _affine(x, c, mean_t[c], scale_t[c], beta[c], relu, out)


@kernel
def backward(x, dout, mean_t, scale_t, beta, mean, inv_std, gamma, relu, batch_stats,
             dx, dgamma, dbeta):
    """dx, dgamma, dbeta of batch norm (and of the fused ReLU when ``relu``).

    With the ReLU, dout is the gradient of the rectified output, taken as zero where the
    recomputed pre-activation was not positive: the sums and dx each recompute that mask
    from x in their own pass (two passes over x and dout; the masked gradient written out
    first and re-read made it three, 2-3x slower: benchmarks/README.md section 49).
    ``batch_stats`` differentiates through the batch mean and variance (training);
    otherwise they are constants.
    """
    n, ch, s = x.shape
    m = n * s
    for c in prange(ch):
        mu = mean[c]
        inv = inv_std[c]
        if relu:
            sb, sxg = _masked_sums_for_grads(x, dout, c, mean_t[c], scale_t[c], beta[c], mu)
        else:
            sb, sxg = _sums_for_grads(x, dout, c, mu)
        dbeta[c] = sb
        dgamma[c] = sxg * inv
        k = gamma[c] * inv
        a = sb / m if batch_stats else 0.0
        b = sxg * inv * inv / m if batch_stats else 0.0
        if relu:
            _masked_input_grad(x, dout, c, mean_t[c], scale_t[c], beta[c], mu, k, a, b,
                               batch_stats, dx)
        elif batch_stats:
            for i in range(n):
                row = x[i, c]
                grow = dout[i, c]
                xrow = dx[i, c]
                for j in range(s):
                    xrow[j] = k * (np.float64(grow[j]) - a - (np.float64(row[j]) - mu) * b)
        else:
            for i in range(n):
                grow = dout[i, c]
                xrow = dx[i, c]
                for j in range(s):
                    xrow[j] = k * np.float64(grow[j])
