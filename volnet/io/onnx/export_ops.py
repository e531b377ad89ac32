"""ONNX exporters for the layers the importer brought in: padding, channel shuffle, PReLU,
ELU, Clip/ReLU6, LogSoftmax, global max pooling, Transpose and constant arithmetic."""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.registry import register_onnx_exporter
from volnet.layers import (
    ELU,
    ChannelShuffle,
    Clip,
    ConstantOp,
    ConstantPad2d,
    GlobalMaxPool2d,
    LogSoftmax,
    Narrow,
    PReLU,
    Transpose,
)
from volnet.layers.base import join_key


@register_onnx_exporter(ConstantPad2d)
def _pad(layer, b, x, shape, prefix):
    left, right, top, bottom = layer.padding
    lead = [0] * (len(shape) - 1)              # batch and any axes before H, W
    pads = b.const(join_key(prefix, "pads"),
                   np.array(lead + [top, left] + lead + [bottom, right], dtype=np.int64))
    value = b.const(join_key(prefix, "value"), np.array(layer.value, dtype=np.float32))
    return b.node("Pad", [x, pads, value], prefix, mode="constant"), layer.output_shape(shape)


@register_onnx_exporter(ChannelShuffle)
def _channel_shuffle(layer, b, x, shape, prefix):
    c, *rest = shape
    g = layer.groups
    split = b.const(join_key(prefix, "split"), np.array([0, g, c // g, *rest], dtype=np.int64))
    merge = b.const(join_key(prefix, "merge"), np.array([0, c, *rest], dtype=np.int64))
    out = b.node("Reshape", [x, split], prefix)
    out = b.node("Transpose", [out], prefix, perm=[0, 2, 1] + list(range(3, len(shape) + 2)))
    return b.node("Reshape", [out, merge], prefix), layer.output_shape(shape)


@register_onnx_exporter(PReLU)
def _prelu(layer, b, x, shape, prefix):
    w = np.asarray(layer.params["weight"], dtype=np.float32)
    if layer.weight_shape is None and layer.num_parameters > 1:
        w = w.reshape((-1,) + (1,) * (len(shape) - 1))   # per channel, right-aligned
    slope = b.const(join_key(prefix, "weight"), w)
    return b.node("PRelu", [x, slope], prefix), layer.output_shape(shape)


@register_onnx_exporter(ELU)
def _elu(layer, b, x, shape, prefix):
    return b.node("Elu", [x], prefix, alpha=layer.alpha), shape


@register_onnx_exporter(Clip)
def _clip(layer, b, x, shape, prefix):
    bounds = [b.const(join_key(prefix, key), np.array(value, dtype=np.float32))
              if value is not None else "" for key, value in (("min", layer.min_value),
                                                              ("max", layer.max_value))]
    while bounds and bounds[-1] == "":
        bounds.pop()
    return b.node("Clip", [x, *bounds], prefix), shape


@register_onnx_exporter(LogSoftmax)
def _log_softmax(layer, b, x, shape, prefix):
    return b.node("LogSoftmax", [x], prefix, axis=layer.dim), shape


@register_onnx_exporter(GlobalMaxPool2d)
def _global_maxpool(layer, b, x, shape, prefix):
    return b.node("GlobalMaxPool", [x], prefix), layer.output_shape(shape)


@register_onnx_exporter(Transpose)
def _transpose(layer, b, x, shape, prefix):
    perm = [0] + [d + 1 for d in layer.dims]
    return b.node("Transpose", [x], prefix, perm=perm), layer.output_shape(shape)


@register_onnx_exporter(ConstantOp)
def _constant_op(layer, b, x, shape, prefix):
    c = b.const(join_key(prefix, "constant"), np.asarray(layer.buffers["constant"], np.float32))
    op = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min"}[layer.op]
    return b.node(op, [c, x] if layer.reverse else [x, c], prefix), layer.output_shape(shape)


@register_onnx_exporter(Narrow)
def _narrow(layer, b, x, shape, prefix):
    starts, ends, axes = (b.const(join_key(prefix, key), np.array([value], dtype=np.int64))
                          for key, value in (("starts", layer.start),
                                             ("ends", layer.start + layer.length),
                                             ("axes", layer.dim)))
    return b.node("Slice", [x, starts, ends, axes], prefix), layer.output_shape(shape)
