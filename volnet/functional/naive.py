"""Slow loop versions of the kernels: executable specifications for the tests.

Each mirrors the definition directly (one output element at a time), so a
reader can check it against the lecture; the fast kernels must agree with them.
"""

from __future__ import annotations

import numpy as np

from volnet.functional.conv import conv_output_size


def conv2d(x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """out[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] * x_pad[n, g*Cg + c, i*S + u*D, j*S + v*D]."""
    n, c, h, wd = x.shape
    f, cg, kh, kw = w.shape
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    out = np.zeros((n, f, ho, wo), dtype=np.result_type(x, w))
    fg = f // groups
    for ni in range(n):
        for fi in range(f):
            g = fi // fg
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                acc += (w[fi, ci, u, v]
                                        * xp[ni, g * cg + ci, i * stride[0] + u * dilation[0],
                                             j * stride[1] + v * dilation[1]])
                    out[ni, fi, i, j] = acc + (b[fi] if b is not None else 0.0)
    return out


def _pool(x, kernel_size, stride, padding, ceil_mode, reduce, pad_value):
    n, c, h, w = x.shape
    ho = conv_output_size(h, kernel_size[0], stride[0], padding[0], ceil_mode=ceil_mode)
    wo = conv_output_size(w, kernel_size[1], stride[1], padding[1], ceil_mode=ceil_mode)
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * stride[0] - padding[0], j * stride[1] - padding[1]
            for ni in range(n):
                for ci in range(c):
                    out[ni, ci, i, j] = reduce(x[ni, ci], r0, c0, h, w, pad_value)
    return out


def maxpool2d(x, kernel_size, stride, padding=(0, 0), ceil_mode=False):
    """out = max over the window; padding counts as -inf."""
    def reduce(plane, r0, c0, h, w, _):
        best = -np.inf
        for u in range(kernel_size[0]):
            for v in range(kernel_size[1]):
                r, cc = r0 + u, c0 + v
                if 0 <= r < h and 0 <= cc < w:
                    best = max(best, plane[r, cc])
        return best
    return _pool(x, kernel_size, stride, padding, ceil_mode, reduce, -np.inf)


def avgpool2d(x, kernel_size, stride, padding=(0, 0), ceil_mode=False, count_include_pad=True):
    """out = sum over the window / count; zero padding counts when count_include_pad."""
    def reduce(plane, r0, c0, h, w, _):
        total, count = 0.0, 0
        for u in range(kernel_size[0]):
            for v in range(kernel_size[1]):
                r, cc = r0 + u, c0 + v
                inside_pad = -padding[0] <= r < h + padding[0] and -padding[1] <= cc < w + padding[1]
                inside = 0 <= r < h and 0 <= cc < w
                if inside:
                    total += plane[r, cc]
                if inside if not count_include_pad else inside_pad:
                    count += 1
        return total / count
    return _pool(x, kernel_size, stride, padding, ceil_mode, reduce, 0.0)
