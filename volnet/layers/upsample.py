"""Upsample: nearest-neighbour and bilinear resizing with a backward pass."""

from __future__ import annotations

import math

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.functional.upsample import resize_matrix, upsample_backward, upsample_forward
from volnet.layers.base import Layer

MODES = ("nearest", "bilinear")


def _positive_pair(value, name: str, kind) -> tuple | None:
    if value is None:
        return None
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(isinstance(v, kind) and not isinstance(v, bool) and v > 0
                                 for v in items)
    if not ok:
        raise ConfigError(f"Upsample: {name} must be a positive {kind[0].__name__} or a pair of "
                          f"them, got {value!r}")
    return tuple(items)


class Upsample(Layer):
    """Resize H and W by a scale factor or to a fixed size; no parameters.

    Follows PyTorch's ``nn.Upsample`` with ``align_corners=False``: ``nearest``
    copies the input pixel at ``floor(dst * scale)``; ``bilinear`` blends the two
    nearest input rows and columns of the pixel centre ``(dst + 0.5) * scale - 0.5``
    (clamped at the borders). The backward pass sends each output gradient back to
    the input pixels with the same weights.

    Args:
        size: Output (H_out, W_out), an int or a pair; or None to use ``scale_factor``.
        scale_factor: Multiplier of H and W (int or float, or a pair); the output is
            ``floor(H * scale_factor)``. Give exactly one of ``size`` and ``scale_factor``.
        mode: ``"nearest"`` (default) or ``"bilinear"``.

    Example:
        >>> Upsample(scale_factor=2).output_shape((64, 7, 7))
        (64, 14, 14)
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest") -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ConfigError("Upsample: give exactly one of size and scale_factor, got "
                              f"size={size!r}, scale_factor={scale_factor!r}")
        if mode not in MODES:
            raise ConfigError(f"Upsample: mode must be one of {MODES}, got {mode!r} "
                              "(align_corners=False semantics)")
        self.size = _positive_pair(size, "size", (int, np.integer))
        self.scale_factor = _positive_pair(scale_factor, "scale_factor", (int, float, np.number))
        self.mode = mode
        self._mats: dict = {}

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError(f"{self.where()} expects a (C, H, W) volume, got {tuple(input_shape)}")
        c, h, w = input_shape
        if self.size is not None:
            return (c,) + tuple(int(s) for s in self.size)
        out = tuple(math.floor(n * float(f)) for n, f in zip((h, w), self.scale_factor))
        if min(out) < 1:
            raise ShapeError(f"{self.where()}: scale_factor {self.scale_factor} turns {h}x{w} into "
                             f"{out[0]}x{out[1]}; the output needs at least one pixel")
        return (c,) + out

    def _check_input(self, x):
        self._expect_rank(x, 4, "(N, C, H, W)")
        self.output_shape(x.shape[1:])

    def _matrices(self, h, w, dtype):
        key = (h, w, np.dtype(dtype).str)
        if key not in self._mats:
            _, ho, wo = self.output_shape((1, h, w))
            scales = ([1.0 / float(f) for f in self.scale_factor] if self.scale_factor
                      else [h / ho, w / wo])
            self._mats = {key: (resize_matrix(h, ho, scales[0], self.mode, dtype),
                                resize_matrix(w, wo, scales[1], self.mode, dtype))}
        return self._mats[key]

    def _forward(self, x, training, keep_cache):
        a_h, a_w = self._matrices(x.shape[2], x.shape[3], x.dtype)
        self._cache = (a_h, a_w) if keep_cache else None
        return upsample_forward(x, a_h, a_w)

    def _backward(self, dout):
        return upsample_backward(dout, *self._cache)

    def extra_repr(self):
        what = (f"size={self.size}" if self.size is not None
                else f"scale_factor={self.scale_factor}")
        return what + (f", mode={self.mode!r}" if self.mode != "nearest" else "")
