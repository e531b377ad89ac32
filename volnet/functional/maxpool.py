"""Max pooling without per-window copies: compare-and-select over shifted views.

Why (profiles in ``benchmarks/README.md``): copying every window into a
(N, C, H_out, W_out, KH*KW) array and taking ``argmax`` over its last, short
axis costs several passes over the input plus a slow short-axis reduction.
Here the forward is separable, a chain of ``np.maximum`` over strided views
(max over each window's columns, then over its rows), and backward finds the
winner by comparing with the saved maxima, so no index array is built in the
forward (inference pays nothing for backprop), then scatter-adds the gradient.

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


def separable_forward(x_pad, kernel_size, stride, out_size, keep_cache):
    """Overlapping windows over an input already padded with -inf: columns first, then rows."""
    (kh, kw), (sh, sw), (ho, wo) = kernel_size, stride, out_size
    rows_needed = sh * (ho - 1) + kh
    xr = x_pad[:, :, :rows_needed]
    cols = [xr[..., _steps(j, sw, wo)] for j in range(kw)]
    col_max = _max_of(cols)                                        # (N, C, rows, W_out)
    out = _max_of([col_max[:, :, _steps(i, sh, ho)] for i in range(kh)])
    # the output itself is not cached: a caller may modify it in place before backward
    return out, ((x_pad, col_max) if keep_cache else None)


def _first_match(candidates, target):
    """Index of the first candidate equal to target, elementwise (uint8; the last if none).

    Horner form over booleans, ``first = ne0 * (1 + ne1 * (1 + ...))``: masked
    ``copyto`` or ``np.where`` with scalars measured 10-20x slower.
    """
    first = np.zeros(target.shape, dtype=np.uint8)
    for i in range(len(candidates) - 2, -1, -1):
        first += 1
        np.multiply(first, candidates[i] != target, out=first)
    return first


def separable_backward(dout, cache, kernel_size, stride):
    """Gradient w.r.t. the padded input, by scatter-adding dout at each window's winner.

    The winning row of each window is the first whose column maximum equals the
    output; the winning column is then found by gathering that row's KW values.
    One ``np.add.at`` then routes every gradient (windows overlap, so positions
    can receive several). Indices are intp: int32 ones cost a conversion per call.
    """
    x_pad, col_max = cache
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, hp, wp = x_pad.shape
    ho, wo = dout.shape[2:]
    rows = [col_max[:, :, _steps(i, sh, ho)] for i in range(kh)]
    out = _max_of(rows)                              # recomputed: one cheap pass
    row = _first_match(rows, out)
    base = (np.arange(n * c, dtype=np.intp) * (hp * wp)).reshape(n, c, 1, 1) + (
        (np.arange(ho, dtype=np.intp) * (sh * wp))[:, None] + np.arange(wo, dtype=np.intp) * sw)
    base += row * np.intp(wp)                        # flat index of each winner's row start
    flat = x_pad.reshape(-1)
    if kw > 1:
        base += _first_match([np.take(flat, base + j) for j in range(kw)], out)
    dx_pad = np.zeros(x_pad.size, dtype=dout.dtype)
    np.add.at(dx_pad, base.reshape(-1), dout.reshape(-1))
    return dx_pad.reshape(x_pad.shape)
