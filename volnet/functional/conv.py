"""Convolution kernels: output sizes, im2col through stride tricks, col2im.

All arrays are NCHW. Shapes used below:
    x     (N, C, H, W)              input volume
    w     (F, C // groups, KH, KW)  filters, output-first as in PyTorch
    b     (F,)                      biases
    out   (N, F, H_out, W_out)
    cols  (N, G, C // G * KH * KW, H_out * W_out)   unrolled receptive fields
"""

from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from volnet.errors import ConfigError, ShapeError
from volnet.functional import conv_choice, conv_gemm, weight_cache
from volnet.functional.activation import (bias_add_, channel_sum, relu_backward,
                                          relu_backward_channel_sum)


def pair(value, name: str) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a tuple ``(height, width)``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ConfigError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    ceil_mode: bool = False,
    strict: bool = False,
    what: str = "layer",
) -> int:
    """Output length of a convolution or pooling window along one axis.

    The lecture's formula ``(W - F + 2P) / S + 1`` with the dilated filter size
    ``D * (F - 1) + 1`` in place of ``F``. PyTorch floors a non-integral result
    (ceil with ``ceil_mode``, where the last window must still start inside the
    input or its left padding); ``strict=True`` raises instead, as CS231n calls
    such settings invalid. An output smaller than 1 always raises.

    Example:
        >>> conv_output_size(227, 11, stride=4)   # AlexNet conv1
        55
    """
    span = dilation * (kernel_size - 1) + 1
    room = size + 2 * padding - span
    formula = (
        f"(W - F + 2P)/S + 1 = ({size} - {span} + 2*{padding})/{stride} + 1"
        + (f" with dilated F = {dilation}*({kernel_size}-1)+1" if dilation > 1 else "")
    )
    if room < 0:
        raise ShapeError(
            f"{what}: the window ({span}) is larger than the padded input "
            f"({size} + 2*{padding} = {size + 2 * padding}); {formula} < 1. "
            "Use a larger input, more padding or a smaller kernel."
        )
    if strict and room % stride:
        raise ShapeError(
            f"{what}: the window does not tile the input exactly: {formula} = "
            f"{room / stride + 1:g} is not an integer. Change padding or stride."
        )
    if not ceil_mode:
        return room // stride + 1
    out = -(-room // stride) + 1
    if (out - 1) * stride >= size + padding:   # last window would start in the right padding
        out -= 1
    return out


def check_conv_hyperparams(kernel_size, stride, padding, dilation, what: str) -> None:
    """Raise a ConfigError for non-positive kernels, strides or dilations or negative padding."""
    for name, value, low in (
        ("kernel_size", kernel_size, 1),
        ("stride", stride, 1),
        ("padding", padding, 0),
        ("dilation", dilation, 1),
    ):
        if min(value) < low:
            raise ConfigError(f"{what}: {name} must be >= {low}, got {value}")


def pad_spatial(x: np.ndarray, padding: tuple[int, int], value: float = 0.0) -> np.ndarray:
    """Pad H and W by ``padding`` on both sides (no copy when there is no padding)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def window_view(
    x_pad: np.ndarray,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_size: tuple[int, int],
) -> np.ndarray:
    """Read-only view (N, C, KH, KW, H_out, W_out) of every window of a padded input."""
    n, c, _, _ = x_pad.shape
    sn, sc, sh, sw = x_pad.strides
    (kh, kw), (st_h, st_w), (dh, dw), (ho, wo) = kernel_size, stride, dilation, out_size
    return as_strided(
        x_pad,
        shape=(n, c, kh, kw, ho, wo),
        strides=(sn, sc, sh * dh, sw * dw, sh * st_h, sw * st_w),
        writeable=False,
    )


def im2col(x, kernel_size, stride, padding, dilation, groups, out_size) -> np.ndarray:
    """Unroll receptive fields into (N, G, C/G * KH * KW, H_out * W_out), one copy."""
    n, c = x.shape[:2]
    view = window_view(pad_spatial(x, padding), kernel_size, stride, dilation, out_size)
    k = (c // groups) * kernel_size[0] * kernel_size[1]
    return view.reshape(n, groups, k, out_size[0] * out_size[1])


def col2im(dcols, x_shape, kernel_size, stride, padding, dilation, out_size) -> np.ndarray:
    """Adjoint of :func:`im2col`: sum every window's gradient back into (N, C, H, W)."""
    n, c, h, w = x_shape
    (kh, kw), (st_h, st_w), (dh, dw), (ph, pw), (ho, wo) = (
        kernel_size, stride, dilation, padding, out_size)
    dcols = dcols.reshape(n, c, kh, kw, ho, wo)
    dx_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + st_h * (ho - 1) + 1, st_h)
            cols = slice(j * dw, j * dw + st_w * (wo - 1) + 1, st_w)
            dx_pad[:, :, rows, cols] += dcols[:, :, i, j]
    return dx_pad[:, :, ph:ph + h, pw:pw + w]


@functools.lru_cache(maxsize=4096)
def _output_sizes(h, w, kh, kw, stride, padding, dilation) -> tuple[int, int]:
    """(H_out, W_out) of a convolution, kept per shape (two conv_output_size calls cost
    ~1 us on every convolution call; an invalid size raises, and is not kept)."""
    return (conv_output_size(h, kh, stride[0], padding[0], dilation[0]),
            conv_output_size(w, kw, stride[1], padding[1], dilation[1]))


def _cast(v, dtype):
    return None if v is None else v.astype(dtype, copy=False)


ConvCache = namedtuple("ConvCache", "x cols w has_bias stride padding dilation groups plan mask")
ConvCache.__doc__ = """What :func:`conv2d_backward` needs from the forward pass: the input ``x``, its
unrolled ``cols`` (layers unrolled in one chunk, else None), the filters ``w``, ``has_bias``,
``stride``, ``padding``, ``dilation``, ``groups``, the ``plan`` (conv_choice.ConvPlan: the
kernels of all three passes) and ``mask`` (out > 0 after a forward with relu=True, else None)."""


def conv2d_forward(x, w, b, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                   keep_cache=True, relu=False, scale=None, residual=None):
    """Convolution (cross-correlation) as chunked im2col + matrix products.

    Args:
        x: (N, C, H, W) input. w: (F, C // groups, KH, KW). b: (F,) or None.
        keep_cache: keep what ``conv2d_backward`` needs; False for inference, which
            also reuses the Winograd filter transform (or the direct kernel's packed
            filters) of an unchanged ``w`` from call to call (volnet.functional.weight_cache).
        relu: return max(0, conv + bias), the ReLU applied where the bias is added (the
            Winograd output transform, or one pass after the matrix products); backward
            then takes the gradient of the rectified output.
        scale: (F,) or None: return ``conv * scale + b`` (per output channel, applied
            with the bias): an inference batch norm after the convolution
            (``functional.norm.batchnorm_inference_affine``). Forward only: needs
            ``keep_cache=False``.
        residual: (N, F, H_out, W_out) or None: add it after the scale and bias and before
            the ReLU, in the same pass (a residual block's shortcut: ``relu(bn(conv(x)) +
            shortcut)``). Forward only, like ``scale``.

    Returns:
        out (N, F, H_out, W_out) and the cache (None when ``keep_cache`` is False).
        The cache holds the input and, only for layers small enough to unroll in one
        chunk, its columns; larger layers are re-unrolled chunk by chunk in backward,
        so a training step's memory stays near the activations'.
        A 1x1 stride-1 unpadded convolution is a plain matrix product with no unrolling.
    """
    if (scale is not None or residual is not None) and keep_cache:
        raise ConfigError("conv2d_forward: scale (a folded batch norm) and residual are for "
                          "inference only; pass keep_cache=False, or run the batch norm and "
                          "the sum as their own layers")
    h, wd = x.shape[2:]
    _, _, kh, kw = w.shape
    dtype = np.result_type(x, w)
    x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
    ho, wo = _output_sizes(h, wd, kh, kw, tuple(stride), tuple(padding), tuple(dilation))
    plan = conv_choice.plan(x.shape, w.shape, stride, padding, dilation, groups, (ho, wo), dtype,
                            training=keep_cache)
    kernel = plan.forward
    cols = None
    # a training forward's ReLU gate: the direct and outer kernels write it with the output
    mask = (np.empty((x.shape[0], w.shape[0], ho, wo), dtype=bool)
            if relu and keep_cache and kernel in ("direct", "outer") else None)
    if kernel == "depthwise":
        from volnet.functional.compiled import depthwise
        if scale is None and not relu and residual is None:
            out = depthwise.conv_forward(x, w, b, stride, padding, dilation, (ho, wo))
        else:
            out = depthwise.conv_forward(x, w, None, stride, padding, dilation, (ho, wo))
            bias_add_(out, _cast(b, dtype), relu, _cast(scale, dtype), residual)
    elif kernel == "direct":
        from volnet.functional.compiled import direct
        out = direct.forward(x, w, _cast(b, dtype), stride, padding, dilation, groups, (ho, wo),
                             relu and residual is None, _cast(scale, dtype),
                             filters_cached=not keep_cache, mask=mask)
        if residual is not None:    # the store has no residual operand: one pass
            bias_add_(out, None, relu, None, residual)
    elif kernel == "outer":
        from volnet.functional.compiled import outer
        out = outer.forward(x, w, _cast(b, dtype), stride, padding, dilation, groups, (ho, wo),
                            relu, _cast(scale, dtype),
                            None if residual is None else _cast(residual, dtype), mask)
    elif kernel == "pointwise":
        from volnet.functional.compiled import pointwise
        out = pointwise.forward(x, w, _cast(b, dtype), stride, groups, (ho, wo), relu,
                                _cast(scale, dtype),
                                None if residual is None else _cast(residual, dtype))
    elif kernel == "winograd4":
        from volnet.functional.compiled import winograd
        # inference reuses the filter transform while w is unchanged (checked bit for bit)
        u = None if keep_cache else weight_cache.derived(
            (w,), "winograd4", lambda: winograd.filter_transform(w))
        out = winograd.forward(x, w, b, padding, dilation, (ho, wo), u, relu, scale,
                               None if residual is None else _cast(residual, dtype))
    else:
        epilogue = None
        if b is not None or relu or scale is not None or residual is not None:
            # applied by the thread that wrote each block, to that block
            epilogue = conv_gemm.Epilogue(_cast(b, dtype), _cast(scale, dtype), residual, relu)
        out, cols = conv_gemm.forward(x, w, stride, padding, dilation, groups, (ho, wo),
                                      keep_cache, epilogue)
    if relu and keep_cache and mask is None:
        mask = out > 0                                   # the ReLU's gradient gate
    cache = (ConvCache(x, cols, w, b is not None, stride, padding, dilation, groups, plan, mask)
             if keep_cache else None)
    return out, cache


def _weight_grad(x, dout, w_shape, cols, stride, padding, dilation, groups, plan):
    """dw by the plan's kernel (``cols``: the forward's im2col columns, or None)."""
    if plan.weight_grad == "depthwise":
        from volnet.functional.compiled import depthwise
        return depthwise.conv_weight_grad(x, dout, w_shape, stride, padding, dilation)
    if plan.weight_grad == "winograd4":
        from volnet.functional.compiled import winograd
        return winograd.weight_grad(x, dout, padding, dilation)
    if plan.weight_grad == "direct":
        from volnet.functional.compiled import direct
        return direct.weight_grad(x, dout, w_shape, stride, padding, dilation, groups)
    if plan.weight_grad == "outer":
        from volnet.functional.compiled import outer
        return outer.weight_grad(x, dout, w_shape, stride, padding, dilation, groups)
    return conv_gemm.weight_grad(x, dout, w_shape, stride, padding, dilation, groups, cols)


def conv2d_backward(dout, cache, input_grad=True):
    """Gradients of :func:`conv2d_forward`: returns (dx, dw, db); db is None without bias.

    ``input_grad=False`` skips dx (returned as None): a network's first layer.
    The kernels are those of the plan the forward pass made (volnet.functional.conv_choice).
    After a forward with ``relu=True``, ``dout`` is the gradient of the rectified output.
    """
    x, cols, w, has_bias, stride, padding, dilation, groups, plan, mask = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    if mask is not None and plan.weight_grad == "outer":
        # the ReLU's gate, the bias gradient and dw in one read of dout (README.md, 62)
        from volnet.functional.compiled import outer
        dw, db, dout = outer.gated_weight_grad(x, dout, mask, w.shape, stride, padding,
                                               dilation, groups, keep_gated=input_grad)
        db = db if has_bias else None
    else:
        if mask is not None and has_bias:    # one pass for both (benchmarks/README.md, 49)
            dout, db = relu_backward_channel_sum(dout, mask)
        else:
            if mask is not None:
                dout = relu_backward(dout, mask)
            db = channel_sum(dout) if has_bias else None
        dw = _weight_grad(x, dout, w.shape, cols, stride, padding, dilation, groups, plan)
    if not input_grad:
        return None, dw, db
    if plan.input_grad == "depthwise":
        from volnet.functional.compiled import depthwise
        return (depthwise.conv_input_grad(dout, w, x.shape, stride, padding, dilation), dw,
                db)
    if plan.input_grad == "winograd4":
        from volnet.functional.compiled import winograd
        dx = winograd.input_grad(dout, w, plan.adjoint_padding, dilation, x.shape[2:])
    elif plan.input_grad == "direct (phases)":
        from volnet.functional.compiled import direct
        dx = direct.input_grad(dout, w, x.shape, stride, padding, dilation, groups)
    elif plan.input_grad == "direct":
        from volnet.functional.compiled import direct
        dx = direct.forward(dout, conv_gemm.flipped_transpose(w, groups), None, (1, 1),
                            plan.adjoint_padding, dilation, groups, x.shape[2:])
    elif plan.input_grad == "outer":
        from volnet.functional.compiled import outer
        dx = outer.forward(dout, conv_gemm.flipped_transpose(w, groups), None, (1, 1),
                           plan.adjoint_padding, dilation, groups, x.shape[2:])
    elif plan.adjoint_padding is not None:
        dx = conv_gemm.input_grad_as_conv(dout, w, x.shape, padding, dilation, groups)
    else:
        dx = conv_gemm.input_grad_by_fold(dout, w, x.shape, stride, padding, dilation, groups)
    return dx, dw, db
