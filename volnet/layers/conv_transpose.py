"""ConvTranspose2d: the transposed ("fractionally strided") convolution of GANs and VAEs."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError, ShapeError
from volnet.functional.conv import check_conv_hyperparams, pair
from volnet.functional.conv_transpose import (
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    conv_transpose_output_size,
)
from volnet.layers.base import Layer
from volnet.layers.conv import check_channel_input, check_groups, keep_grads


class ConvTranspose2d(Layer):
    """Transposed convolution: the adjoint of a ``Conv2d`` with the same F, S, P, D and groups.

    Each input unit scatters a copy of its filter, scaled by its value, into the
    output at stride S, so a stride-2 layer doubles H and W ("fractionally strided
    convolution"; DCGAN's generator grows 7x7 maps to 28x28 this way). Its forward is
    the input gradient of that ``Conv2d`` and its backward the ``Conv2d``'s forward
    plus a weight gradient, computed with the same kernels.

    Args:
        in_channels: Channels of the input volume.
        out_channels: Channels of the output volume.
        kernel_size: Filter height and width F, an int or (KH, KW).
        stride: Output step S between neighbouring input units. Default 1.
        padding: Rows/columns P cut from each border of the full output. Default 0.
        output_padding: Extra rows/columns added at the bottom/right (less than the
            stride or the dilation) to choose among the S input sizes that a strided
            convolution maps to the same output size. Default 0.
        dilation: Gap between filter taps. Default 1.
        groups: Channel groups transformed separately.
        bias: Add a learned bias per output channel.
        rng: Generator or seed for the He-normal initial weights (fan-in: the
            C_in / groups * KH * KW / (S_h * S_w) inputs an output unit sees on
            average); biases start at 0.
        dtype: Parameter dtype, float32 by default.

    Parameters (PyTorch's names and layout): ``weight`` (C_in, C_out / groups, KH, KW),
    ``bias`` (C_out,).

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H_out, W_out),
        H_out = (H - 1)S - 2P + D(F - 1) + output_padding + 1, likewise W_out.

    Example:
        >>> ConvTranspose2d(128, 64, 4, stride=2, padding=1).output_shape((128, 7, 7))
        (64, 14, 14)
    """

    transposed = True     # read by the summary and receptive-field tools

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1, rng=None,
                 dtype=np.float32):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("groups", groups)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ConfigError(f"ConvTranspose2d: {name} must be an int, got {value!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.groups = int(groups)
        what = f"ConvTranspose2d({in_channels}, {out_channels}, kernel_size={kernel_size})"
        self.kernel_size = pair(kernel_size, f"{what}: kernel_size")
        self.stride = pair(stride, f"{what}: stride")
        self.padding = pair(padding, f"{what}: padding")
        self.output_padding = pair(output_padding, f"{what}: output_padding")
        self.dilation = pair(dilation, f"{what}: dilation")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ConfigError(f"{what}: in_channels and out_channels must be >= 1")
        check_conv_hyperparams(self.kernel_size, self.stride, self.padding, self.dilation, what)
        for i, axis in enumerate(("height", "width")):
            op = self.output_padding[i]
            if op < 0 or op >= max(self.stride[i], self.dilation[i]):
                raise ConfigError(
                    f"{what}: output_padding {self.output_padding} must be >= 0 and smaller than "
                    f"the stride {self.stride} or the dilation {self.dilation} (along the "
                    f"{axis}); it only chooses among the sizes one strided convolution merges")
        check_groups(what, self.in_channels, self.out_channels, self.groups)
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        fan_in = max(1.0, self.in_channels // self.groups * self.kernel_size[0]
                     * self.kernel_size[1] / (self.stride[0] * self.stride[1]))
        rng = init.make_rng(rng)
        self.params["weight"] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=dtype)

    def _check_input(self, x):
        check_channel_input(self, x)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ShapeError(f"{self.where()} expects a (C, H, W) volume, got {tuple(input_shape)}")
        c, h, w = input_shape
        if c != self.in_channels:
            raise ShapeError(f"{self.where()} expected {self.in_channels} channels, got "
                             f"input shape {tuple(input_shape)}")
        ho, wo = (conv_transpose_output_size(size, self.kernel_size[i], self.stride[i],
                                             self.padding[i], self.dilation[i],
                                             self.output_padding[i], what=self.where_lazily())
                  for i, size in enumerate((h, w)))
        return (self.out_channels, ho, wo)

    def _forward(self, x, training, keep_cache):
        out, self._cache = conv_transpose2d_forward(
            x, self.params["weight"], self.params.get("bias"), self.stride, self.padding,
            self.output_padding, self.dilation, self.groups, keep_cache=keep_cache)
        return out

    def _backward(self, dout, input_grad=True):
        return keep_grads(self, conv_transpose2d_backward(dout, self._cache,
                                                          input_grad=input_grad))

    def _backward_params(self, dout):
        self._backward(dout, input_grad=False)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)),
                              ("output_padding", (0, 0)), ("dilation", (1, 1))):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if "bias" not in self.params:
            text += ", bias=False"
        return text
