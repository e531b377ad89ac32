"""Transposed ("fractionally strided") convolution: the adjoint of
:func:`volnet.functional.conv.conv2d_forward`.

A transposed convolution with weight ``w`` of shape (C_in, C_out // groups, KH, KW)
(PyTorch's layout) is exactly the input gradient of a Conv2d that has the same weight
as its filters (F = C_in filters over C_out channels). So its forward pass reuses
the convolution's input-gradient kernels, and its backward pass is an ordinary
convolution of the output gradient (giving dx) plus the convolution's weight gradient
with the roles of input and output swapped (giving dw):

    y = conv^T(x; w)             forward   (conv's dx of "dout" = x)
    dx = conv(dy; w)             backward  (conv's forward over dy)
    dw = conv_weight_grad(dy, x)           (conv's dw with input dy and output gradient x)

Shapes: x (N, C_in, H, W), y (N, C_out, H_out, W_out) with
H_out = (H - 1) S - 2P + D (F - 1) + output_padding + 1.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.functional import conv_choice, conv_gemm


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               dilation: int = 1, output_padding: int = 0, *,
                               what: str = "layer") -> int:
    """Output length of a transposed convolution along one axis.

    ``(W - 1) S - 2P + D (F - 1) + output_padding + 1``: the input length of the
    convolution (same F, S, P, D) whose output length is ``W``; ``output_padding``
    picks one of the S input lengths that a strided convolution maps to ``W``.

    Example:
        >>> conv_transpose_output_size(7, 4, stride=2, padding=1)   # DCGAN: 7x7 -> 14x14
        14
    """
    out = (size - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1
    if out < 1:
        raise ShapeError(
            f"{what}: output size (W - 1)S - 2P + D(F - 1) + output_padding + 1 = "
            f"({size} - 1)*{stride} - 2*{padding} + {dilation}*({kernel_size} - 1) + "
            f"{output_padding} + 1 = {out} < 1. Use less padding or a larger input."
        )
    return out


def conv_transpose2d_forward(x, w, b, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                             dilation=(1, 1), groups=1, keep_cache=True):
    """y (N, C_out, H_out, W_out) = transposed convolution of x with w (C_in, C_out/G, KH, KW).

    Returns (y, cache); the cache is None when ``keep_cache`` is False.
    """
    n, _, h, wd = x.shape
    _, cog, kh, kw = w.shape
    dtype = np.result_type(x, w)
    x = np.ascontiguousarray(x, dtype=dtype)
    w = w.astype(dtype, copy=False)
    out_size = tuple(conv_transpose_output_size(s, k, st, p, d, op) for s, k, st, p, d, op in
                     zip((h, wd), (kh, kw), stride, padding, dilation, output_padding))
    y_shape = (n, cog * groups) + out_size
    if output_padding == (0, 0) and conv_choice.adjoint_is_conv(cog, (kh, kw), stride, padding, dilation):
        y = conv_gemm.input_grad_as_conv(x, w, y_shape, padding, dilation, groups)
    else:
        y = conv_gemm.input_grad_by_fold(x, w, y_shape, stride, padding, dilation, groups)
    y = np.ascontiguousarray(y)
    if b is not None:
        y += b.astype(dtype, copy=False).reshape(1, -1, 1, 1)
    cache = (x, w, b is not None, stride, padding, dilation, groups) if keep_cache else None
    return y, cache


def conv_transpose2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv_transpose2d_forward`: (dx, dw, db); dx None unless ``input_grad``."""
    x, w, has_bias, stride, padding, dilation, groups = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    h, wd = x.shape[2:]
    dw = conv_gemm.weight_grad(dout, x, w.shape, stride, padding, dilation, groups)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not input_grad:
        return None, dw, db
    kh, kw = w.shape[2:]
    # the convolution of dy has H outputs, or more when output_padding >= stride (possible
    # with dilation): those extra positions are not inputs of the forward and are cut off
    full = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1 for s, p, d, k, st in
                 zip(dout.shape[2:], padding, dilation, (kh, kw), stride))
    dx, _ = conv_gemm.forward(dout, w, stride, padding, dilation, groups, full)
    if full != (h, wd):
        dx = np.ascontiguousarray(dx[:, :, :h, :wd])
    return dx, dw, db
