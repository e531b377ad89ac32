"""ONNX exporters of the leaf layers: convolution, pooling, resizing, Linear,
activations, normalisation, affine and reshape layers."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.io.onnx.registry import register_onnx_exporter
from volnet.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAffine,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    LeakyReLU,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
    Reshape,
    Scale,
    Sigmoid,
    Softmax,
    Tanh,
    Upsample,
)
from volnet.layers.base import join_key


# ---- leaf layers ----------------------------------------------------------------
def _window(layer) -> dict:
    ph, pw = layer.padding
    return {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
            "pads": [ph, pw, ph, pw]}


@register_onnx_exporter(Conv2d)
def _conv(layer, b, x, shape, prefix):
    inputs = [x, b.param(layer, "weight", prefix)]
    if "bias" in layer.params:
        inputs.append(b.param(layer, "bias", prefix))
    out = b.node("Conv", inputs, prefix, dilations=list(layer.dilation), group=layer.groups,
                 **_window(layer))
    return out, layer.output_shape(shape)


@register_onnx_exporter(ConvTranspose2d)
def _conv_transpose(layer, b, x, shape, prefix):
    inputs = [x, b.param(layer, "weight", prefix)]      # (C_in, C_out/groups, KH, KW) in both
    if "bias" in layer.params:
        inputs.append(b.param(layer, "bias", prefix))
    out = b.node("ConvTranspose", inputs, prefix, dilations=list(layer.dilation),
                 group=layer.groups, output_padding=list(layer.output_padding), **_window(layer))
    return out, layer.output_shape(shape)


@register_onnx_exporter(Upsample)
def _upsample(layer, b, x, shape, prefix):
    # scales, not sizes, keep the batch axis dynamic
    out_shape = layer.output_shape(shape)
    if layer.scale_factor is not None:
        spatial = [float(f) for f in layer.scale_factor]
    else:
        spatial = []
        for o, i in zip(out_shape[1:], shape[1:]):
            scale = np.float32(o / i)
            while np.floor(i * float(scale)) < o:      # rounded down: floor(in * scale) would lose a row
                scale = np.nextafter(scale, np.float32(np.inf))
            spatial.append(float(scale))
    scales = b.const(join_key(prefix, "scales"), np.array([1.0, 1.0] + spatial, dtype=np.float32))
    if layer.mode == "nearest":
        attrs = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                 "nearest_mode": "floor"}
    else:
        attrs = {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
    return b.node("Resize", [x, "", scales], prefix, **attrs), out_shape


@register_onnx_exporter(Linear)
def _linear(layer, b, x, shape, prefix):
    inputs = [x, b.param(layer, "weight", prefix)]
    if "bias" in layer.params:
        inputs.append(b.param(layer, "bias", prefix))
    return b.node("Gemm", inputs, prefix, transB=1), layer.output_shape(shape)


@register_onnx_exporter(MaxPool2d)
def _maxpool(layer, b, x, shape, prefix):
    out = b.node("MaxPool", [x], prefix, ceil_mode=int(layer.ceil_mode), **_window(layer))
    return out, layer.output_shape(shape)


@register_onnx_exporter(AvgPool2d)
def _avgpool(layer, b, x, shape, prefix):
    out = b.node("AveragePool", [x], prefix, ceil_mode=int(layer.ceil_mode),
                 count_include_pad=int(layer.count_include_pad), **_window(layer))
    return out, layer.output_shape(shape)


@register_onnx_exporter(GlobalAvgPool2d)
def _global_avgpool(layer, b, x, shape, prefix):
    return b.node("GlobalAveragePool", [x], prefix), layer.output_shape(shape)


@register_onnx_exporter(AdaptiveAvgPool2d)
def _adaptive_avgpool(layer, b, x, shape, prefix):
    (h, w), (oh, ow) = shape[1:], layer.output_size
    out_shape = layer.output_shape(shape)
    if (h, w) == (oh, ow):
        return b.node("Identity", [x], prefix), out_shape
    if (oh, ow) == (1, 1):
        return b.node("GlobalAveragePool", [x], prefix), out_shape
    if (h, w) == (1, 1):   # every window is the single input cell: a broadcast
        target = b.const(join_key(prefix, "shape"), np.array([1, 1, oh, ow], dtype=np.int64))
        return b.node("Expand", [x, target], prefix), out_shape
    if h % oh or w % ow:
        raise ConfigError(f"AdaptiveAvgPool2d at {prefix}: windows for {h}x{w} -> {oh}x{ow} are "
                          "uneven and have no ONNX equivalent; export at an input size where "
                          "they divide evenly")
    kernel = [h // oh, w // ow]
    out = b.node("AveragePool", [x], prefix, kernel_shape=kernel, strides=kernel)
    return out, out_shape


def _simple(op: str, **attrs_of):
    def export(layer, b, x, shape, prefix):
        attrs = {key: get(layer) for key, get in attrs_of.items()}
        return b.node(op, [x], prefix, **attrs), layer.output_shape(shape)
    return export


for _type, _fn in [(ReLU, _simple("Relu")), (Tanh, _simple("Tanh")), (Sigmoid, _simple("Sigmoid")),
                   (Identity, _simple("Identity")), (Dropout, _simple("Identity")),
                   (LeakyReLU, _simple("LeakyRelu", alpha=lambda l: l.negative_slope)),
                   (Softmax, _simple("Softmax", axis=lambda l: l.dim)),
                   (Flatten, _simple("Flatten", axis=lambda l: 1))]:
    register_onnx_exporter(_type)(_fn)


@register_onnx_exporter(BatchNorm1d)
@register_onnx_exporter(BatchNorm2d)
def _batchnorm(layer, b, x, shape, prefix):
    inputs = [x] + [b.param(layer, key, prefix)
                    for key in ("weight", "bias", "running_mean", "running_var")]
    return b.node("BatchNormalization", inputs, prefix, epsilon=layer.eps), layer.output_shape(shape)


@register_onnx_exporter(LocalResponseNorm)
def _lrn(layer, b, x, shape, prefix):
    if layer.size % 2 == 0:
        # ONNX centres an even window one channel later than PyTorch/volnet do.
        raise ConfigError(f"LocalResponseNorm at {prefix}: even size {layer.size} has no exact "
                          "ONNX LRN equivalent; use an odd size")
    out = b.node("LRN", [x], prefix, size=layer.size, alpha=layer.alpha, beta=layer.beta,
                 bias=layer.k)
    return out, layer.output_shape(shape)


@register_onnx_exporter(ChannelAffine)
def _channel_affine(layer, b, x, shape, prefix):
    per_channel = (1, len(layer.scale)) + (1,) * (len(shape) - 1)
    scale = b.const(join_key(prefix, "scale"), np.reshape(np.float32(layer.scale), per_channel))
    shift = b.const(join_key(prefix, "shift"), np.reshape(np.float32(layer.shift), per_channel))
    return b.node("Add", [b.node("Mul", [x, scale], prefix), shift], prefix), shape


@register_onnx_exporter(Scale)
def _scale(layer, b, x, shape, prefix):
    factor = b.const(join_key(prefix, "factor"), np.array(layer.factor, dtype=np.float32))
    return b.node("Mul", [x, factor], prefix), shape


@register_onnx_exporter(Reshape)
def _reshape(layer, b, x, shape, prefix):
    target = b.const(join_key(prefix, "shape"), np.array((0,) + layer.shape, dtype=np.int64))
    return b.node("Reshape", [x, target], prefix), layer.output_shape(shape)
