"""ConstantPad2d: pad H and W with a constant, each side on its own (Caffe's ceil-mode
pooling and TensorFlow's SAME padding are asymmetric)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers.base import Layer


class ConstantPad2d(Layer):
    """Pad the last two axes with ``value``: ``padding`` = (left, right, top, bottom), as in
    PyTorch (an int pads all four sides equally).

    Max pooling over asymmetric pads uses ``value=-inf`` (padding never wins a window).

    Shape:
        (N, C, H, W) -> (N, C, H + top + bottom, W + left + right)

    Example:
        >>> ConstantPad2d((0, 1, 0, 1)).output_shape((3, 4, 4))
        (3, 5, 5)
    """

    def __init__(self, padding, value: float = 0.0) -> None:
        super().__init__()
        pads = (padding,) * 4 if isinstance(padding, (int, np.integer)) else tuple(padding)
        if len(pads) != 4 or any(int(p) != p or p < 0 for p in pads):
            raise ConfigError(f"ConstantPad2d: padding must be 4 non-negative ints (left, right, "
                              f"top, bottom), got {padding!r}")
        self.padding = tuple(int(p) for p in pads)
        self.value = float(value)

    def output_shape(self, input_shape):
        left, right, top, bottom = self.padding
        *lead, h, w = input_shape
        return (*lead, h + top + bottom, w + left + right)

    def _check_input(self, x):
        if x.ndim < 3:
            self._expect_rank(x, 4, "(N, C, H, W)")

    def _forward(self, x, training, keep_cache):
        left, right, top, bottom = self.padding
        widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
        self._cache = x.shape if keep_cache else None
        return np.pad(x, widths, constant_values=self.value)

    def _backward(self, dout):
        left, _, top, _ = self.padding
        h, w = self._cache[-2:]
        return np.ascontiguousarray(dout[..., top:top + h, left:left + w])

    def extra_repr(self):
        return f"padding={self.padding}" + (f", value={self.value}" if self.value else "")
