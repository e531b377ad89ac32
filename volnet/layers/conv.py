"""Conv2d: the CONV layer of the lecture."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError, ShapeError
from volnet.functional.conv import (
    check_conv_hyperparams,
    conv2d_backward,
    conv2d_forward,
    conv_output_size,
    pair,
)
from volnet.functional.norm import batchnorm_inference_affine
from volnet.layers.base import Layer
from volnet.layers.relu_fusion import ReLUFusion


def check_groups(what: str, in_channels: int, out_channels: int, groups: int) -> None:
    """Raise a ConfigError unless ``groups`` divides both channel counts."""
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ConfigError(f"{what}: groups={groups} must divide both in_channels "
                          f"({in_channels}) and out_channels ({out_channels})")


def check_channel_input(layer, x) -> None:
    """A (N, C, H, W) batch with the layer's ``in_channels`` and a valid output size."""
    layer._expect_rank(x, 4, "(N, C, H, W)")
    if x.shape[1] != layer.in_channels:
        raise ShapeError(f"{layer.where()} expected {layer.in_channels} channels, got "
                         f"{x.shape[1]} in input of shape {x.shape}")
    layer.output_shape(x.shape[1:])


def keep_grads(layer: Layer, grads) -> np.ndarray | None:
    """Store a conv kernel's (dx, dw, db) on ``layer`` (no bias: no db) and return dx."""
    dx, dw, db = grads
    layer.grads["weight"] = dw
    if db is not None:
        layer.grads["bias"] = db
    return dx


class Conv2d(ReLUFusion, Layer):
    """2-D convolution (cross-correlation) over a batch of volumes.

    Each of the ``out_channels`` filters spans the full input depth (or
    ``in_channels / groups`` of it), slides with ``stride`` over the input
    padded with ``padding`` zeros, and shares its weights across positions.

    Args:
        in_channels: Channels C of the input volume.
        out_channels: Number of filters K (the lecture's K; PyTorch's out_channels).
        kernel_size: Filter height and width F, an int or (KH, KW).
        stride: Step S between filter applications. Default 1.
        padding: Zeros P added on each side of H and W. Default 0.
        dilation: Gap between filter taps; 1 is an ordinary convolution.
        groups: Split channels into groups convolved separately (AlexNet's two columns).
        bias: Add a learned bias per filter.
        rng: Generator or seed for the He-normal initial weights (biases start at 0).
        dtype: Parameter dtype, float32 by default.

    Shape:
        input (N, C, H, W) -> output (N, K, H_out, W_out),
        H_out = floor((H + 2P - D(F - 1) - 1) / S) + 1, likewise W_out.

    Example:
        >>> Conv2d(3, 16, kernel_size=3, padding=1).output_shape((3, 32, 32))
        (16, 32, 32)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, rng=None, dtype=np.float32):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"Conv2d: {name} must be an int, got {value!r}")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        what = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        self.kernel_size = pair(kernel_size, f"{what}: kernel_size")
        self.stride = pair(stride, f"{what}: stride")
        self.padding = pair(padding, f"{what}: padding")
        self.dilation = pair(dilation, f"{what}: dilation")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError(f"{what}: in_channels and out_channels must be >= 1")
        check_conv_hyperparams(self.kernel_size, self.stride, self.padding, self.dilation, what)
        check_groups(what, self.in_channels, self.out_channels, self.groups)
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.params["weight"] = init.he_normal(shape, init.make_rng(rng), dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=dtype)

    def _check_input(self, x):
        check_channel_input(self, x)

    def output_shape(self, input_shape):
        c, h, w = input_shape
        if c != self.in_channels:
            raise ShapeError(f"{self.where()} expected {self.in_channels} channels, got "
                             f"input shape {tuple(input_shape)}")
        ho, wo = (conv_output_size(size, self.kernel_size[i], self.stride[i], self.padding[i],
                                   self.dilation[i], what=self.where_lazily())
                  for i, size in enumerate((h, w)))
        return (self.out_channels, ho, wo)

    _fold = None            # the batch norm folded in, only while forward_folded runs

    def forward_folded(self, x, bn, relu=False):
        """Inference of this convolution, the batch norm ``bn`` after it and, with ``relu``,
        a ReLU after that, in one pass: the batch norm's per-channel scale and shift and the
        ReLU are applied where the convolution adds its bias (the Winograd output
        transform, or the pass after the matrix products).

        Sequential calls this at inference (``training=False``, no cache) unless the
        kernels are pinned to NumPy (``backend.fusing()``); keeps no cache. The scale and shift are computed from the
        live parameters and running statistics on every call.
        """
        self._fold, self._relu = bn, bool(relu)
        try:
            return self.forward(x, False, cache=False)
        finally:
            self._fold, self._relu = None, False

    def _forward(self, x, training, keep_cache):
        if self._fold is not None:
            return self.fused_inference(x, self._fold, self._relu)
        out, self._cache = conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                          self.stride, self.padding, self.dilation,
                                          self.groups, keep_cache=keep_cache, relu=self._relu)
        return out

    def fused_inference(self, x, bn=None, relu=False, residual=None):
        """Inference output of this convolution with, in the same pass where the bias is
        added, the batch norm ``bn`` after it (None: none), the sum with ``residual`` (an
        array of the output's shape: a residual block's shortcut; None: none) and a ReLU.

        No checks and no hooks: the caller checked ``x`` (``forward_folded`` through
        ``forward``; an inference plan on its first, unplanned call for this shape). The
        batch norm's scale and shift are computed from the live parameters and running
        statistics on every call, so nothing derived from them can go stale.
        """
        w, b, scale = self.params["weight"], self.params.get("bias"), None
        if bn is not None:
            scale, b = batchnorm_inference_affine(
                bn.params["weight"], bn.params["bias"], bn.buffers["running_mean"],
                bn.buffers["running_var"], bn.eps, b, np.result_type(x, w))
        return conv2d_forward(x, w, b, self.stride, self.padding, self.dilation, self.groups,
                              keep_cache=False, relu=relu, scale=scale, residual=residual)[0]

    def _backward(self, dout, input_grad=True):
        self._check_relu_cache(self._cache.mask is not None)
        return keep_grads(self, conv2d_backward(dout, self._cache, input_grad=input_grad))

    def _backward_params(self, dout):
        self._backward(dout, input_grad=False)   # the first layer: dx of the images is not needed

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if "bias" not in self.params:
            text += ", bias=False"
        return text
