"""Upsampling kernels (nearest and bilinear) as separable interpolation matrices.

Resizing H -> H_out and W -> W_out is linear and acts on each axis alone, so
``y = A_h @ x @ A_w.T`` per (sample, channel) map with one (H_out, H) and one
(W_out, W) matrix; the backward pass is the transpose, ``dx = A_h.T @ dy @ A_w``.
Each row of a matrix holds the weights one output position gives the input
positions: a single 1 (nearest) or two weights summing to 1 (bilinear).

Source coordinates follow PyTorch's ``align_corners=False``: with ``scale`` the
input-per-output ratio (``1 / scale_factor`` when a scale factor is given, else
``in / out``),

    nearest:   src = min(floor(dst * scale), in - 1)
    bilinear:  src = max((dst + 0.5) * scale - 0.5, 0), split between floor(src)
               and floor(src) + 1 (clamped to the last row) by the fraction.
"""

from __future__ import annotations

import numpy as np


def resize_matrix(size_in: int, size_out: int, scale: float, mode: str, dtype=np.float64) -> np.ndarray:
    """The (size_out, size_in) interpolation matrix of one axis."""
    dst = np.arange(size_out, dtype=np.float64)
    rows = np.arange(size_out)
    a = np.zeros((size_out, size_in), dtype=np.float64)
    if mode == "nearest":
        src = np.minimum(np.floor(dst * scale).astype(np.int64), size_in - 1)
        a[rows, src] = 1.0
        return a.astype(dtype)
    src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    frac = src - i0
    np.add.at(a, (rows, i0), 1.0 - frac)
    np.add.at(a, (rows, i1), frac)
    return a.astype(dtype)


def upsample_forward(x: np.ndarray, a_h: np.ndarray, a_w: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, C, H_out, W_out) = A_h @ x @ A_w.T for every map."""
    return np.matmul(np.matmul(a_h, x), a_w.T)


def upsample_backward(dout: np.ndarray, a_h: np.ndarray, a_w: np.ndarray) -> np.ndarray:
    """dx = A_h.T @ dout @ A_w: each input position collects the weights it gave."""
    return np.matmul(np.matmul(a_h.T, dout), a_w)
