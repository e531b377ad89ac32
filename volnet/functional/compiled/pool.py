"""Max pooling in one pass each way: the forward records each window's winner (flat
index into its H x W plane, int32), the backward scatters the gradient there.

Planes (N*C of them) are split among threads, so overlapping windows never race.
Padding is never materialised: windows are clipped to the plane (padding counts as
-infinity, as in PyTorch). Ties go to the first maximum in row-major window order,
as in PyTorch's CPU kernel. A window holding NaN outputs NaN (PyTorch routes the
gradient to its last NaN, this kernel to one of them).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from volnet.runtime.launch import kernel


@njit(cache=True)
def _column_max(plane, r0, r1, colmax, colrow):
    """Max of each column over rows r0..r1-1 and the first row holding it (selects,
    not branches: the inner loop vectorises)."""
    row = plane[r0]
    for c in range(colmax.shape[0]):
        colmax[c] = row[c]
        colrow[c] = r0
    for r in range(r0 + 1, r1):
        row = plane[r]
        for c in range(colmax.shape[0]):
            v = row[c]
            m = colmax[c]
            take = (v > m) | np.isnan(v)
            colmax[c] = v if take else m
            colrow[c] = r if take else colrow[c]


@kernel
def max_forward(x, kh, kw, sh, sw, ph, pw, out, arg, keep):
    """x (P, H, W) -> out (P, Ho, Wo); arg (P, Ho, Wo) int32 winners when ``keep``.

    Per output row: column maxima over the window's rows (with the first row of each),
    then the maximum over each window's columns, ties broken by (row, column): the
    first maximum in row-major order.
    """
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for p in prange(planes):
        plane = x[p]
        colmax = np.empty(w, dtype=x.dtype)
        colrow = np.empty(w, dtype=np.int64)
        for i in range(ho):
            r0 = i * sh - ph
            r1 = min(r0 + kh, h)
            r0 = max(r0, 0)
            _column_max(plane, r0, r1, colmax, colrow)
            orow = out[p, i]
            for j in range(wo):
                c0 = j * sw - pw
                c1 = min(c0 + kw, w)
                c0 = max(c0, 0)
                best = colmax[c0]
                br = colrow[c0]
                bc = c0
                for c in range(c0 + 1, c1):
                    v = colmax[c]
                    rr = colrow[c]
                    take = (v > best) | ((v == best) & (rr < br)) | np.isnan(v)
                    best = v if take else best
                    br = rr if take else br
                    bc = c if take else bc
                orow[j] = best
                if keep:
                    arg[p, i, j] = br * w + bc


@njit(cache=True)
def _max_into(dst, src, n):
    """dst[:n] = max(dst[:n], src[:n]), NaN winning (a select, not a branch: vectorises)."""
    for m in range(n):
        v = src[m]
        d = dst[m]
        dst[m] = v if (v > d) | np.isnan(v) else d


@kernel
def max_values(x, kh, kw, sh, sw, ph, pw, out):
    """x (P, H, W) -> out (P, Ho, Wo), the window maxima alone (inference: no winners kept).

    Stride 1 (Inception's 3x3/1 pools): :func:`_plane_stride1`. Otherwise,
    per output row: the column maxima over the window's rows, written into a row padded
    with -infinity on both sides (as PyTorch pads), then each output the maximum of its
    window's columns there, by selects that vectorise (:func:`max_forward`, which also
    tracks each winner for backward, runs 2-3x slower). A NaN anywhere in a window gives
    NaN, as there.
    """
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    width = max(w + 2 * pw, (wo - 1) * sw + kw)
    for p in prange(planes):
        plane = x[p]
        if sh == 1 and sw == 1:
            _plane_stride1(plane, kh, kw, ph, pw, out[p])
            continue
        col = np.empty(width, dtype=x.dtype)
        col[:] = -np.inf
        for i in range(ho):
            r0 = i * sh - ph
            r1 = min(r0 + kh, h)
            r0 = max(r0, 0)
            first = plane[r0]
            for c in range(w):
                col[pw + c] = first[c]
            for r in range(r0 + 1, r1):
                row = plane[r]
                for c in range(w):
                    v = row[c]
                    m = col[pw + c]
                    col[pw + c] = v if (v > m) | np.isnan(v) else m
            orow = out[p, i]
            for j in range(wo):
                orow[j] = col[j * sw]
            for k in range(1, kw):
                for j in range(wo):
                    v = col[j * sw + k]
                    m = orow[j]
                    orow[j] = v if (v > m) | np.isnan(v) else m


@njit(cache=True)
def _max_into(dst, src, n):
    """dst[:n] = max(dst[:n], src[:n]), NaN winning (a select, not a branch: vectorises)."""
    for m in range(n):
        v = src[m]
        d = dst[m]
        dst[m] = v if (v > d) | np.isnan(v) else d


@njit(cache=True)
def _plane_stride1(plane, kh, kw, ph, pw, oplane):
    """:func:`max_values` of one plane at stride 1: copied into a scratch plane padded with
    -infinity (the bottom and right also cover ceil_mode's partial windows), then the row
    and column maxima as running maxima of shifted copies, one long loop over the
    flattened plane per tap (small planes, 14x14 or 7x7, made per-row loops too short to
    vectorise: 512x14x14 1.0 ms with winners, 0.36 per row, 0.20 so). Element loops,
    not slice assignments: those cost ~20 ns per row."""
    h, w = plane.shape
    ho, wo = oplane.shape
    hp = max(h + 2 * ph, ho + kh - 1)
    wp = max(w + 2 * pw, wo + kw - 1)
    xp = np.empty(hp * wp, dtype=plane.dtype)
    xp[:] = -np.inf
    for r in range(h):
        base = (r + ph) * wp + pw
        for c in range(w):
            xp[base + c] = plane[r, c]
    n = ho * wp
    rows = xp[:n].copy()                        # row maxima of every output row
    for k in range(1, kh):
        _max_into(rows, xp[k * wp:k * wp + n], n)
    n -= kw - 1
    cols = rows[:n].copy()
    for k in range(1, kw):
        _max_into(cols, rows[k:k + n], n)
    for i in range(ho):
        for j in range(wo):
            oplane[i, j] = cols[i * wp + j]


@kernel
def max_forward_2x2(x, out, arg, keep):
    """:func:`max_forward` for 2x2 windows at stride 2 without padding, every window whole
    (out (P, H // 2, W // 2)): the same comparisons in the same order, written out for the
    four values of a window instead of the general loops over column maxima (LeNet's and
    the VGG-style net's pools, benchmarks/README.md section 24)."""
    planes, w = x.shape[0], x.shape[2]
    ho, wo = out.shape[1], out.shape[2]
    for p in prange(planes):
        plane = x[p]
        for i in range(ho):
            top = plane[2 * i]
            bottom = plane[2 * i + 1]
            orow = out[p, i]
            for j in range(wo):
                a, b = top[2 * j], top[2 * j + 1]
                c, d = bottom[2 * j], bottom[2 * j + 1]
                # column maxima over the two rows, first row kept unless beaten or NaN
                t0 = (c > a) | np.isnan(c)
                m0 = c if t0 else a
                r0 = 1 if t0 else 0
                t1 = (d > b) | np.isnan(d)
                m1 = d if t1 else b
                r1 = 1 if t1 else 0
                # then across the two columns, ties to the earlier row
                take = (m1 > m0) | ((m1 == m0) & (r1 < r0)) | np.isnan(m1)
                orow[j] = m1 if take else m0
                if keep:
                    arg[p, i, j] = ((2 * i + r1) * w + 2 * j + 1) if take else \
                        ((2 * i + r0) * w + 2 * j)


@kernel
def max_backward(dout, arg, dx):
    """dx (P, H, W) = 0, then dx.flat[winner] += dout for every window (plane by plane)."""
    planes = dx.shape[0]
    ho, wo = dout.shape[1], dout.shape[2]
    for p in prange(planes):
        flat = dx[p].reshape(-1)
        flat[:] = 0
        for i in range(ho):
            for j in range(wo):
                flat[arg[p, i, j]] += dout[p, i, j]
