"""Max pooling without per-window copies: compare-and-select over shifted views.

Why (profiles in ``benchmarks/README.md``): copying every window into a
(N, C, H_out, W_out, KH*KW) array and taking ``argmax`` over its last, short
axis costs several passes over the input plus a slow short-axis reduction.
Here the forward is a chain of ``np.maximum`` over strided views, separable
for overlapping windows (max over the window's columns, then over its rows),
and backward finds the winner by comparing with the saved output, so no index
array is built in the forward (inference pays nothing for backprop).

Ties go to the first maximum in row-major window order, as in PyTorch: the
winning row is the first row whose column-maximum equals the output, the
winning column the first column in that row equal to it.

Shapes: x (N, C, H, W) -> out (N, C, H_out, W_out); windows (KH, KW), strides (SH, SW).
"""

from __future__ import annotations

import numpy as np


def _steps(offset: int, stride: int, count: int) -> slice:
    """Positions offset, offset + stride, ... (count of them) along one axis."""
    return slice(offset, offset + stride * (count - 1) + 1, stride)


def _max_of(views):
    """Elementwise max of same-shaped views, one pass each (np.maximum.reduce would stack them)."""
    out = np.maximum(views[0], views[1]) if len(views) > 1 else views[0].copy()
    for view in views[2:]:
        np.maximum(out, view, out=out)
    return out


def tiled_forward(x, kernel_size, out_size, keep_cache):
    """Windows that tile x exactly (KH == SH, KW == SW, no padding): max over a reshape."""
    n, c = x.shape[:2]
    (kh, kw), (ho, wo) = kernel_size, out_size
    x6 = x.reshape(n, c, ho, kh, wo, kw)
    rows = _max_of([x6[:, :, :, i] for i in range(kh)])          # (N, C, H_out, W_out, KW)
    out = _max_of([rows[..., j] for j in range(kw)])
    return out, ((x, out) if keep_cache else None)


def tiled_backward(dout, cache, kernel_size):
    """Route dout to each tile's first maximum, one tile row at a time.

    Works on (N, C, H_out, W) rows of x (a long contiguous inner axis): a
    broadcast over the 6-D tile view has an inner loop of length KW and was
    3x slower (profile in benchmarks/README.md).
    """
    x, out = cache
    n, c, ho, wo = out.shape
    kh, kw = kernel_size
    x_rows = x.reshape(n, c, ho, kh, wo * kw)
    out_wide = np.repeat(out, kw, axis=-1)                      # (N, C, H_out, W)
    dout_wide = np.repeat(dout, kw, axis=-1)
    dx = np.empty(x_rows.shape, dtype=dout.dtype)
    seen = np.zeros(out.shape, dtype=bool)
    for i in range(kh):
        hit = x_rows[:, :, :, i] == out_wide
        for j in range(kw):                  # keep only the first maximum of each tile
            h = hit[..., j::kw]
            h &= ~seen
            seen |= h
        np.multiply(dout_wide, hit, out=dx[:, :, :, i])
    return dx.reshape(x.shape)


def separable_forward(x_pad, kernel_size, stride, out_size, keep_cache):
    """Overlapping windows over an input already padded with -inf: columns first, then rows."""
    (kh, kw), (sh, sw), (ho, wo) = kernel_size, stride, out_size
    rows_needed = sh * (ho - 1) + kh
    xr = x_pad[:, :, :rows_needed]
    cols = [xr[..., _steps(j, sw, wo)] for j in range(kw)]
    col_max = _max_of(cols)                                        # (N, C, rows, W_out)
    out = _max_of([col_max[:, :, _steps(i, sh, ho)] for i in range(kh)])
    return out, ((x_pad, col_max, out) if keep_cache else None)


def separable_backward(dout, cache, kernel_size, stride):
    """Gradient w.r.t. the padded input: rows stage into col_max, then columns stage into x_pad."""
    x_pad, col_max, out = cache
    (kh, kw), (sh, sw) = kernel_size, stride
    ho, wo = out.shape[2:]
    d_col = np.zeros(col_max.shape, dtype=dout.dtype)
    seen = np.zeros(out.shape, dtype=bool)
    for i in range(kh):
        rows = _steps(i, sh, ho)
        hit = col_max[:, :, rows] == out
        hit &= ~seen
        seen |= hit
        d_col[:, :, rows] += dout * hit
    dx_pad = np.zeros(x_pad.shape, dtype=dout.dtype)
    nrows = col_max.shape[2]
    seen = np.zeros(col_max.shape, dtype=bool)
    for j in range(kw):
        cols = _steps(j, sw, wo)
        hit = x_pad[:, :, :nrows, cols] == col_max
        hit &= ~seen
        seen |= hit
        dx_pad[:, :, :nrows, cols] += d_col * hit
    return dx_pad
