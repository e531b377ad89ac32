"""ReLU, the residual sum's ReLU, bias add and per-channel sums: NumPy reference and the
compiled kernels (``compiled/activation.py``), chosen by ``backend.compiled()``.

The compiled path takes C-contiguous float32/float64 arrays; anything else (views,
other dtypes) goes through NumPy, with the same results.
"""

from __future__ import annotations

import numpy as np

from volnet.runtime import backend, launch

_KERNELS = "volnet.functional.compiled.activation"   # compiled twins, imported on first use

_EMPTY = np.zeros(0, dtype=np.bool_)
_EMPTY_3D = {np.dtype(t): np.zeros((0, 0, 0), dtype=t) for t in (np.float32, np.float64)}


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _fast(*arrays) -> bool:
    """Whether the compiled kernels take these arrays: C-contiguous, all float32 or all
    float64, and ``backend.compiled`` for the largest. A plain loop: every convolution's
    epilogue asks (the generator and set it was cost 1.5-2.5 us a call)."""
    dtype = arrays[0].dtype
    if dtype not in _FLOATS:
        return False
    size = 0
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            return False
        if a.size > size:
            size = a.size
    return backend.compiled(size)



def _mask(shape, keep_cache, reuse):
    """The mask array: ``reuse`` (the layer's previous mask, dead once this forward runs)
    when it fits, so a training loop does not fault in a fresh array every step."""
    if not keep_cache:
        return None
    if isinstance(reuse, np.ndarray) and reuse.shape == shape and reuse.dtype == np.bool_ \
            and reuse.flags.c_contiguous and reuse.flags.writeable:
        return reuse
    return np.empty(shape, dtype=np.bool_)


def relu_forward(x, keep_cache=True, reuse=None):
    """(max(x, 0), mask x > 0 or None). NaN passes through; the mask is False there.

    ``reuse``: a previous mask that may be overwritten (compiled path only).
    """
    if _fast(x):
        out = np.empty_like(x)
        mask = _mask(x.shape, keep_cache, reuse)
        launch.run(_KERNELS, "relu_forward", x.size, x.reshape(-1), out.reshape(-1),
             _EMPTY if mask is None else mask.reshape(-1))
        return out, mask
    mask = x > 0 if keep_cache else None
    return np.maximum(x, 0).astype(x.dtype, copy=False), mask   # not x * mask: that gives -0.0


def add_relu(a, b, keep_cache=True, reuse=None):
    """(max(a + b, 0), mask a + b > 0 or None): a residual block's sum and activation."""
    if a.shape == b.shape and _fast(a, b):
        out = np.empty_like(a)
        mask = _mask(a.shape, keep_cache, reuse)
        launch.run(_KERNELS, "add_relu", a.size, a.reshape(-1), b.reshape(-1), out.reshape(-1),
             _EMPTY if mask is None else mask.reshape(-1))
        return out, mask
    return relu_forward(a + b, keep_cache)


def relu_backward(dout, mask):
    """dout where the ReLU's input was positive, else 0."""
    if mask.shape == dout.shape and _fast(dout) and mask.flags.c_contiguous:
        dx = np.empty_like(dout)
        launch.run(_KERNELS, "relu_backward", dout.size, dout.reshape(-1), mask.reshape(-1), dx.reshape(-1))
        return dx
    # a select, as the compiled kernel's: NaN or inf where the gate is shut gives 0 (a
    # product with the mask gave NaN there, on small arrays only)
    return np.where(mask, dout, np.zeros((), np.result_type(dout)))


def relu_backward_channel_sum(dout, mask):
    """(dout where mask, else 0; its sum over every axis but 1): a fused ReLU's gradient and
    the bias gradient after it, in one pass (the same values as :func:`relu_backward`, then
    :func:`channel_sum`)."""
    if (mask.shape == dout.shape and dout.ndim >= 2 and _fast(dout) and dout.size
            and mask.flags.c_contiguous and dout.flags.c_contiguous):
        dx = np.empty_like(dout)
        total = np.empty(dout.shape[1])
        launch.run(_KERNELS, "relu_backward_channel_sum", dout.size, _flat3(dout), _flat3(mask),
                   _flat3(dx), total)
        return dx, total.astype(dout.dtype)
    dx = relu_backward(dout, mask)
    return dx, channel_sum(dx)


def _flat3(v):
    return v.reshape(v.shape[:2] + (-1,)) if v.size else v.reshape(v.shape[:2] + (0,))


def bias_add_(out, bias, relu=False, scale=None, residual=None):
    """out = out * scale + bias per channel (axis 1), in place, plus ``residual`` (an array
    of out's shape: a residual block's shortcut) when given, then max(0, out) when
    ``relu``: a conv's epilogue, one pass over the output for all four. ``bias`` None adds
    nothing, ``scale`` None multiplies by nothing. Returns out."""
    channels = out.shape[1] if out.ndim >= 2 else 0
    bias = np.zeros(channels, out.dtype) if bias is None else bias
    # one _fast over every operand (out is the largest: the same answer as one per operand)
    operands = (out, bias) + (() if scale is None else (scale,)) + (
        () if residual is None else (residual,))
    if (out.ndim >= 2 and out.size and (residual is None or residual.shape == out.shape)
            and _fast(*operands)):
        scale = np.ones(channels, out.dtype) if scale is None else scale
        if residual is None:
            launch.run(_KERNELS, "bias_add", out.size, _flat3(out), scale, bias, bool(relu))
        else:
            launch.run(_KERNELS, "bias_add_residual", out.size, _flat3(out), scale, bias,
                       _flat3(residual), bool(relu))
        return out
    shape = (1, -1) + (1,) * (out.ndim - 2)
    if scale is not None:
        out *= scale.reshape(shape)
    out += bias.reshape(shape)
    if residual is not None:
        out += residual
    if relu:
        np.maximum(out, 0, out=out)
    return out


def bias_add_transposed(src, out, bias, relu=False, scale=None, residual=None):
    """:func:`bias_add_` of a product laid out channels first: out (N, C, ...) = src (C, N,
    ...) transposed, times ``scale``, plus ``bias`` and ``residual`` (out's shape), then
    max(0, out) when ``relu``, in one pass that reads src and writes out (a 1x1
    convolution's product over several samples at once, conv_gemm). Returns out."""
    channels = out.shape[1]
    bias = np.zeros(channels, out.dtype) if bias is None else bias
    scale = np.ones(channels, out.dtype) if scale is None else scale
    if (src.shape == (out.shape[1], out.shape[0]) + out.shape[2:] and out.size
            and _fast(src, out, bias, scale)
            and (residual is None or (residual.shape == out.shape and _fast(out, residual)))):
        launch.run(_KERNELS, "bias_add_transposed", out.size, _flat3(src), _flat3(out), scale,
                   bias, _EMPTY_3D[out.dtype] if residual is None else _flat3(residual), bool(relu))
        return out
    np.copyto(out, np.swapaxes(src, 0, 1))
    return bias_add_(out, bias, relu, scale, residual)


def channel_sum(x):
    """Sum over every axis but 1 (a bias gradient), in x's dtype."""
    if x.ndim >= 2 and _fast(x) and x.size:
        total = np.empty(x.shape[1])
        launch.run(_KERNELS, "channel_sum", x.size, _flat3(x), total)
        return total.astype(x.dtype)
    return x.sum(axis=(0,) + tuple(range(2, x.ndim)))
