"""Direct depthwise convolution (groups == in == out channels, as in MobileNet), compiled.

im2col + GEMM is a poor fit for depthwise layers: each group's product is a (1, KH*KW)
by (KH*KW, positions) matrix-vector product, so the unrolled copy costs more than the
arithmetic. These loops read each input plane in place instead: per filter tap, one
pass over the output rows whose inner loop runs along a row (vectorised for stride 1).
Parallel over (image, channel) planes for forward and dx, over channels for dw.
float32 in and out; dw sums each row in float32 and the rows in float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from volnet.runtime import launch


@njit(inline="always")
def _span(out_len, in_len, stride, offset):  # pragma: no cover - compiled
    """Output indices o in [lo, hi) with 0 <= o*stride + offset < in_len."""
    lo = 0
    while lo < out_len and lo * stride + offset < 0:
        lo += 1
    hi = out_len
    while hi > lo and (hi - 1) * stride + offset >= in_len:
        hi -= 1
    return lo, hi


@launch.kernel(fastmath=True)
def forward(x, w, bias, out, stride, padding, dilation):  # pragma: no cover - compiled
    """out[n, c] = bias[c] + sum_ij w[c, 0, i, j] x[n, c, o*s + i*d - p] (zero outside)."""
    n_img, n_ch, h, wd = x.shape
    kh, kw = w.shape[2:]
    ho, wo = out.shape[2:]
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for it in prange(n_img * n_ch):
        n, c = it // n_ch, it % n_ch
        plane, src = out[n, c], x[n, c]
        plane[:, :] = bias[c]
        for i in range(kh):
            r_lo, r_hi = _span(ho, h, sh, i * dh - ph)
            for j in range(kw):
                c_lo, c_hi = _span(wo, wd, sw, j * dw - pw)
                coef = w[c, 0, i, j]
                first, count = c_lo * sw + j * dw - pw, c_hi - c_lo
                for oh in range(r_lo, r_hi):
                    dst = plane[oh, c_lo:c_hi]
                    if sw == 1:                 # contiguous: the loop vectorises
                        row = src[oh * sh + i * dh - ph, first:first + count]
                        for t in range(count):
                            dst[t] += coef * row[t]
                    else:
                        row = src[oh * sh + i * dh - ph]
                        for t in range(count):
                            dst[t] += coef * row[first + t * sw]


@launch.kernel(fastmath=True)
def input_grad(dout, w, dx, stride, padding, dilation):  # pragma: no cover - compiled
    """dx[n, c] = sum over taps of w[c, 0, i, j] * dout scattered back to the taps' inputs."""
    n_img, n_ch, h, wd = dx.shape
    kh, kw = w.shape[2:]
    ho, wo = dout.shape[2:]
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for it in prange(n_img * n_ch):
        n, c = it // n_ch, it % n_ch
        plane, src = dx[n, c], dout[n, c]
        plane[:, :] = 0.0
        for i in range(kh):
            r_lo, r_hi = _span(ho, h, sh, i * dh - ph)
            for j in range(kw):
                c_lo, c_hi = _span(wo, wd, sw, j * dw - pw)
                coef = w[c, 0, i, j]
                first, count = c_lo * sw + j * dw - pw, c_hi - c_lo
                for oh in range(r_lo, r_hi):
                    row = src[oh, c_lo:c_hi]
                    if sw == 1:
                        dst = plane[oh * sh + i * dh - ph, first:first + count]
                        for t in range(count):
                            dst[t] += coef * row[t]
                    else:
                        dst = plane[oh * sh + i * dh - ph]
                        for t in range(count):
                            dst[first + t * sw] += coef * row[t]


@launch.kernel(fastmath=True)
def weight_grad(x, dout, dw_out, stride, padding, dilation):  # pragma: no cover - compiled
    """dw[c, 0, i, j] = sum over images and outputs of dout[n, c, o] * x[n, c, o*s + i*d - p]."""
    n_img, n_ch, h, wd = x.shape
    kh, kw = dw_out.shape[2:]
    ho, wo = dout.shape[2:]
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    for c in prange(n_ch):
        for i in range(kh):
            r_lo, r_hi = _span(ho, h, sh, i * dh - ph)
            for j in range(kw):
                c_lo, c_hi = _span(wo, wd, sw, j * dw - pw)
                first, count = c_lo * sw + j * dw - pw, c_hi - c_lo
                acc = 0.0
                for n in range(n_img):
                    for oh in range(r_lo, r_hi):
                        grad = dout[n, c, oh, c_lo:c_hi]
                        part = np.float32(0.0)  # one row in float32, rows summed in float64
                        if sw == 1:
                            row = x[n, c, oh * sh + i * dh - ph, first:first + count]
                            for t in range(count):
                                part += grad[t] * row[t]
                        else:
                            row = x[n, c, oh * sh + i * dh - ph]
                            for t in range(count):
                                part += grad[t] * row[first + t * sw]
                        acc += part
                dw_out[c, 0, i, j] = acc


def conv_forward(x, w, bias, stride, padding, dilation, out_size):
    """(N, C, Ho, Wo) float32 depthwise correlation plus bias (None: no bias)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    w = np.ascontiguousarray(w, dtype=np.float32)
    c = x.shape[1]
    b = np.zeros(c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    out = np.empty((x.shape[0], c, *out_size), dtype=np.float32)
    launch.on_threads(forward, x, w, b, out, stride, padding, dilation)
    return out


def conv_input_grad(dout, w, x_shape, stride, padding, dilation):
    """dx (N, C, H, W) float32 of the depthwise correlation."""
    dx = np.empty(x_shape, dtype=np.float32)
    launch.on_threads(input_grad, np.ascontiguousarray(dout, dtype=np.float32),
                      np.ascontiguousarray(w, dtype=np.float32), dx, stride, padding, dilation)
    return dx


def conv_weight_grad(x, dout, w_shape, stride, padding, dilation):
    """dw (C, 1, KH, KW) float32 of the depthwise correlation."""
    dw = np.empty(w_shape, dtype=np.float32)
    launch.on_threads(weight_grad, np.ascontiguousarray(x, dtype=np.float32),
                      np.ascontiguousarray(dout, dtype=np.float32), dw, stride, padding,
                      dilation)
    return dw
