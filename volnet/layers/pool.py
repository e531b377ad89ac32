"""POOL layers: max (argmax backprop), average, global max and average, adaptive average."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.functional import pool as P
from volnet.functional.conv import check_conv_hyperparams, pair
from volnet.layers.base import Layer


class _Pool2d(Layer):
    """Shared window hyperparameters and checks for MaxPool2d and AvgPool2d.

    @public (the API reference documents it: its subclasses inherit these members)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        what = f"{type(self).__name__}(kernel_size={kernel_size})"
        self.kernel_size = pair(kernel_size, f"{what}: kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{what}: stride")
        self.padding = pair(padding, f"{what}: padding")
        self.dilation = (1, 1)
        self.ceil_mode = bool(ceil_mode)
        check_conv_hyperparams(self.kernel_size, self.stride, self.padding, self.dilation, what)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{what}: padding {self.padding} must be at most half the kernel "
                              f"size {self.kernel_size} (a window must never be all padding)")

    def _check_input(self, x):
        self._expect_rank(x, 4, "(N, C, H, W)")
        self.output_shape(x.shape[1:])

    def output_shape(self, input_shape):
        c, h, w = input_shape
        return (c,) + P.pool_output_size((h, w), self.kernel_size, self.stride, self.padding,
                                         self.ceil_mode, what=self.where_lazily())

    def extra_repr(self):
        text = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        return text


class MaxPool2d(_Pool2d):
    """Max over each window; backward routes the gradient to the recorded argmax.

    With tied maxima the first one in row-major window order wins, as in PyTorch.
    Padding counts as -infinity.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), H_out = floor((H + 2P - F) / S) + 1
        (ceil with ``ceil_mode``).

    Example:
        >>> MaxPool2d(3, stride=2).output_shape((96, 55, 55))   # AlexNet pool1
        (96, 27, 27)
    """

    _reuses_cache = True

    def _forward(self, x, training, keep_cache):
        out, self._cache = P.maxpool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                               self.ceil_mode, keep_cache=keep_cache,
                                               reuse=self._reusable_cache())   # dead now
        return out

    def _backward(self, dout):
        return P.maxpool2d_backward(dout, self._cache)


class AvgPool2d(_Pool2d):
    """Mean over each window; zero padding counts in the divisor unless
    ``count_include_pad=False`` (PyTorch's rule).

    Example:
        >>> AvgPool2d(2).output_shape((6, 28, 28))
        (6, 14, 14)
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _forward(self, x, training, keep_cache):
        out, self._cache = P.avgpool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                               self.ceil_mode, self.count_include_pad, keep_cache)
        return out

    def _backward(self, dout):
        return P.avgpool2d_backward(dout, self._cache)

    def extra_repr(self):
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")


class GlobalAvgPool2d(Layer):
    """Average each channel over all positions: (N, C, H, W) -> (N, C, 1, 1).

    GoogLeNet and ResNet use it in place of large FC layers.

    Example:
        >>> GlobalAvgPool2d().output_shape((512, 7, 7))
        (512, 1, 1)
    """

    def _check_input(self, x):
        self._expect_rank(x, 4, "(N, C, H, W)")

    def output_shape(self, input_shape):
        return (input_shape[0], 1, 1)

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        n, c, h, w = x.shape
        if x.size == 0 or x.dtype.kind != "f":
            return x.mean(axis=(2, 3), keepdims=True)
        # each plane's sum as a product with a vector of ones, then / (H*W) as mean does:
        # BLAS's GEMV took 7 us for 2048x7x7 where NumPy's mean over two axes took 46
        sums = x.reshape(n * c, h * w) @ np.ones(h * w, dtype=x.dtype)
        return (sums / (h * w)).reshape(n, c, 1, 1)

    def _backward(self, dout):
        h, w = self._cache[2:]
        return np.broadcast_to(dout / (h * w), self._cache).copy()


class GlobalMaxPool2d(Layer):
    """Maximum of each channel over all positions: (N, C, H, W) -> (N, C, 1, 1); the gradient
    goes to the first maximum in row-major order (as in PyTorch).

    Example:
        >>> GlobalMaxPool2d().output_shape((512, 7, 7))
        (512, 1, 1)
    """

    def _check_input(self, x):
        self._expect_rank(x, 4, "(N, C, H, W)")

    def output_shape(self, input_shape):
        return (input_shape[0], 1, 1)

    def _forward(self, x, training, keep_cache):
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        if h * w == 0:
            return x.max(axis=(2, 3), keepdims=True)   # raises NumPy's empty-reduction error
        winner = flat.argmax(axis=2)
        self._cache = (x.shape, winner) if keep_cache else None
        return np.take_along_axis(flat, winner[..., None], axis=2).reshape(n, c, 1, 1)

    def _backward(self, dout):
        shape, winner = self._cache
        n, c, h, w = shape
        dx = np.zeros((n, c, h * w), dtype=dout.dtype)
        np.put_along_axis(dx, winner[..., None], dout.reshape(n, c, 1), axis=2)
        return dx.reshape(shape)


class AdaptiveAvgPool2d(Layer):
    """Average over adaptive windows so the output is exactly ``output_size`` (PyTorch's rule).

    torchvision's AlexNet and VGG end their features with ``AdaptiveAvgPool2d((6, 6))`` /
    ``((7, 7))``, an identity at their native input sizes.

    Example:
        >>> AdaptiveAvgPool2d(7).output_shape((512, 14, 14))
        (512, 7, 7)
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = pair(output_size, "output_size")
        if min(self.output_size) < 1:
            raise ConfigError(f"AdaptiveAvgPool2d: output_size must be >= 1, got {output_size}")

    def _check_input(self, x):
        self._expect_rank(x, 4, "(N, C, H, W)")

    def output_shape(self, input_shape):
        return (input_shape[0],) + self.output_size

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        if x.shape[2:] == self.output_size:
            return x.copy()
        return P.adaptive_avgpool2d_forward(x, self.output_size)

    def _backward(self, dout):
        if self._cache[2:] == self.output_size:
            return dout.copy()
        return P.adaptive_avgpool2d_backward(dout, self._cache)

    def extra_repr(self):
        return f"output_size={self.output_size}"
