"""The operands of a fused epilogue (``out * scale + bias + residual``, then the ReLU) as the
compiled convolution kernels read them: float32, contiguous, and checked against the layer
before any kernel indexes them unchecked (outer.py, pointwise.py); and the ReLU gate a
training forward's store writes (outer.py, direct.py)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError

_EMPTY = np.zeros(0, np.float32)


def operands(kernel: str, out: np.ndarray, bias, scale, residual) -> tuple:
    """(scale, bias, residual) for an output ``out`` (N, F, ...): scale and bias (F,) float32
    or empty where None; the residual float32 of out's shape, or ``out`` itself where None
    (a placeholder the kernel does not read).

    Raises:
        ShapeError: naming ``kernel`` and the operand of the wrong shape (a shorter bias or
            residual would be read past its end).
    """
    f = out.shape[1]
    s = _EMPTY if scale is None else np.ascontiguousarray(scale, np.float32).reshape(-1)
    b = _EMPTY if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    res = out if residual is None else np.ascontiguousarray(residual, np.float32)
    for name, given, v, want in (("bias", bias, b, (f,)), ("scale", scale, s, (f,)),
                                 ("residual", residual, res, out.shape)):
        if given is not None and v.shape != want:
            raise ShapeError(f"{kernel}: {name} has shape {np.shape(given)}, the layer needs "
                             f"{want}; pass one value per filter (residual: the output's "
                             f"shape)")
    return s, b, res


def gate(kernel: str, mask, out_shape, relu: bool, residual=None):
    """``mask``, checked as the ReLU gate (out > 0) a kernel's store writes beside each value:
    a C-contiguous bool array of the output's shape, with ``relu`` and no ``residual``;
    None where None.

    Raises:
        ShapeError: naming ``kernel`` and the fix (a gate of another shape or layout would be
            written past its end).
    """
    if mask is None:
        return None
    if not (relu and residual is None and mask.dtype == np.bool_
            and mask.shape == tuple(out_shape) and mask.flags.c_contiguous):
        raise ShapeError(f"{kernel}: mask {mask.dtype} {mask.shape} must be a C-contiguous "
                         f"bool array of the output's shape {tuple(out_shape)}, with "
                         f"relu=True and no residual; pass np.empty(out_shape, bool)")
    return mask
