"""Elementwise kernels: ReLU forward (output and mask in one pass) and backward, the
residual sum with its ReLU, bias add and per-channel sums (a bias gradient).

Arrays are flat and C-contiguous (the callers reshape); ``prange`` splits them among
numba's threads. NaN passes through the ReLU as through ``np.maximum(x, 0)``; its
mask, like ``x > 0``, is False there.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from volnet.runtime.launch import kernel


@kernel
def relu_forward(x, out, mask):
    """out = max(x, 0) and mask = x > 0 over flat arrays (mask may be empty: not kept)."""
    if mask.size:
        for i in prange(x.size):
            v = x[i]
            mask[i] = v > 0
            out[i] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
    else:
        for i in prange(x.size):
            v = x[i]
            out[i] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)


@kernel
def add_relu(a, b, out, mask):
    """out = max(a + b, 0) and mask = a + b > 0 (a residual block's sum and activation)."""
    if mask.size:
        for i in prange(a.size):
            v = a[i] + b[i]
            mask[i] = v > 0
            out[i] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
    else:
        for i in prange(a.size):
            v = a[i] + b[i]
            out[i] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)


@kernel
def relu_backward(dout, mask, dx):
    """dx = dout where mask, else 0."""
    for i in prange(dout.size):
        dx[i] = dout[i] if mask[i] else 0


@kernel
def bias_add(out, scale, bias, relu):
    """out[n, c, :] = out[n, c, :] * scale[c] + bias[c] in place, then max(0, out) when
    ``relu``; out is (N, C, S). A scale of 1 leaves the products exact."""
    n, ch, s = out.shape
    for p in prange(n * ch):
        row = out[p // ch, p % ch]
        a = scale[p % ch]
        b = bias[p % ch]
        if relu:
            for j in range(s):
                v = row[j] * a + b
                row[j] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
        else:
            for j in range(s):
                row[j] = row[j] * a + b


@kernel
def bias_add_residual(out, scale, bias, residual, relu):
    """out[n, c, :] = out[n, c, :] * scale[c] + bias[c] + residual[n, c, :] in place, then
    max(0, out) when ``relu``: a residual block's last convolution, its batch norm, the
    shortcut's sum and the block's ReLU in one pass (out and residual (N, C, S)). The sum
    is rounded in the order of the separate passes (scaled output plus bias, then plus the
    shortcut), so the result has the same bits."""
    n, ch, s = out.shape
    for p in prange(n * ch):
        row = out[p // ch, p % ch]
        add = residual[p // ch, p % ch]
        a = scale[p % ch]
        b = bias[p % ch]
        if relu:
            for j in range(s):
                v = row[j] * a + b
                v = v + add[j]
                row[j] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
        else:
            for j in range(s):
                v = row[j] * a + b
                row[j] = v + add[j]


@kernel
def bias_add_transposed(src, out, scale, bias, residual, relu):
    """out[n, c, :] = src[c, n, :] * scale[c] + bias[c] (+ residual[n, c, :] when residual
    is not empty), then max(0, out) when ``relu``: :func:`bias_add_residual`'s pass reading
    a product laid out channels first (src (C, N, S)) and writing NCHW (out (N, C, S)), so
    the product's transpose costs no pass of its own. Rounded as bias_add_residual."""
    ch, n, s = src.shape
    for p in prange(n * ch):
        row = src[p % ch, p // ch]
        dst = out[p // ch, p % ch]
        a = scale[p % ch]
        b = bias[p % ch]
        if residual.size:
            add = residual[p // ch, p % ch]
            if relu:
                for j in range(s):
                    v = row[j] * a + b
                    v = v + add[j]
                    dst[j] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
            else:
                for j in range(s):
                    v = row[j] * a + b
                    dst[j] = v + add[j]
        elif relu:
            for j in range(s):
                v = row[j] * a + b
                dst[j] = 0 if v <= 0 else v  # noqa: FURB136 (max(0, v) drops NaN)
        else:
            for j in range(s):
                dst[j] = row[j] * a + b


@njit(fastmath={"reassoc"}, cache=True)
def _row_sum(row):
    acc = 0.0
    for j in range(row.shape[0]):
        acc += np.float64(row[j])
    return acc


@kernel
def channel_sum(x, out):
    """out[c] = sum of x[:, c, :] in float64 accumulators; x is (N, C, S)."""
    n, ch, _ = x.shape
    for c in prange(ch):
        acc = 0.0
        for i in range(n):
            acc += _row_sum(x[i, c])
        out[c] = acc


@kernel
def relu_backward_channel_sum(dout, mask, dx, out):
    """dx = dout where mask, else 0, and out[c] = sum of dx[:, c, :] (float64 accumulators,
    summed as :func:`channel_sum` sums: the same bits) in one pass, each row summed while
    it is in cache (a convolution's fused ReLU and its bias gradient); arrays (N, C, S)."""
    n, ch, s = dout.shape
    for c in prange(ch):
        acc = 0.0
        for i in range(n):
            src = dout[i, c]
            keep = mask[i, c]
            dst = dx[i, c]
            for j in range(s):
                dst[j] = src[j] if keep[j] else 0
            acc += _row_sum(dst)
        out[c] = acc

