"""Max pooling in one pass each way: the forward records each window's winner (flat
index into its H x W plane, int32), the backward scatters the gradient there.

Planes (N*C of them) are split among threads, so overlapping windows never race.
Padding is never materialised: windows are clipped to the plane (padding counts as
-infinity, as in PyTorch). Ties go to the first maximum in row-major window order,
and the last NaN wins its window, both as in PyTorch's CPU kernel.
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def max_forward(x, kh, kw, sh, sw, ph, pw, out, arg, keep):
    """x (P, H, W) -> out (P, Ho, Wo); arg (P, Ho, Wo) int32 winners when ``keep``."""
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for p in prange(planes):
        plane = x[p]
        for i in range(ho):
            r0 = i * sh - ph
            r1 = min(r0 + kh, h)
            r0 = max(r0, 0)
            for j in range(wo):
                c0 = j * sw - pw
                c1 = min(c0 + kw, w)
                c0 = max(c0, 0)
                best = plane[r0, c0]
                where = r0 * w + c0
                for r in range(r0, r1):
                    row = plane[r]
                    for c in range(c0, c1):
                        v = row[c]
                        if v > best or v != v:
                            best = v
                            where = r * w + c
                out[p, i, j] = best
                if keep:
                    arg[p, i, j] = where


@njit(parallel=True, cache=True)
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
