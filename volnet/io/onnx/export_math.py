"""ONNX exporters of the layers that arrived with today's CNN families: the broadcasting
BinaryOp, MatMul of two computed tensors, SiLU/HardSigmoid/HardSwish, Erf/GELU, LayerNorm, Reduce, Power, Expand and
BatchedLinear. Where an operator is newer than the requested opset (HardSwish 14,
LayerNormalization 17, Gelu 20) the exporter spells it out in older operators, as PyTorch
does."""

from __future__ import annotations

import math

import numpy as np

from volnet.io.onnx.registry import register_onnx_exporter
from volnet.layers import (
    GELU,
    BatchedLinear,
    BinaryOp,
    Erf,
    Expand,
    HardSigmoid,
    HardSwish,
    LayerNorm,
    MatMul,
    Power,
    Reduce,
    SiLU,
)
from volnet.layers.base import join_key

BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min"}
# the opset from which each reduction takes its axes as an input instead of an attribute
AXES_INPUT = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18}


def _scalar(b, prefix, name, value):
    return b.const(join_key(prefix, name), np.array(value, dtype=np.float32))


def reduce_node(b, op: str, x: str, axes, prefix: str, keepdims: bool = True) -> str:
    """A ReduceX node over ``axes`` of the whole tensor, axes as the opset wants them."""
    axes = [int(a) for a in axes]
    if b.opset >= AXES_INPUT[op]:
        given = b.const(join_key(prefix, "axes"), np.array(axes, dtype=np.int64))
        return b.node(op, [x, given], prefix, keepdims=int(keepdims))
    return b.node(op, [x], prefix, axes=axes, keepdims=int(keepdims))


@register_onnx_exporter(BinaryOp)
def _binary(layer, b, xs, shapes, prefix):
    return b.node(BINARY[layer.op], list(xs), prefix), layer.output_shape(shapes)


@register_onnx_exporter(MatMul)
def _matmul(layer, b, xs, shapes, prefix):
    return b.node("MatMul", list(xs), prefix), layer.output_shape(shapes)


@register_onnx_exporter(SiLU)
def _silu(layer, b, x, shape, prefix):
    return b.node("Mul", [x, b.node("Sigmoid", [x], prefix)], prefix), shape


@register_onnx_exporter(HardSigmoid)
def _hard_sigmoid(layer, b, x, shape, prefix):
    return b.node("HardSigmoid", [x], prefix, alpha=layer.alpha, beta=layer.beta), shape


@register_onnx_exporter(HardSwish)
def _hard_swish(layer, b, x, shape, prefix):
    if b.opset >= 14:
        return b.node("HardSwish", [x], prefix), shape
    gate = b.node("HardSigmoid", [x], prefix, alpha=1 / 6, beta=0.5)
    return b.node("Mul", [x, gate], prefix), shape


@register_onnx_exporter(Erf)
def _erf(layer, b, x, shape, prefix):
    return b.node("Erf", [x], prefix), shape


@register_onnx_exporter(GELU)
def _gelu(layer, b, x, shape, prefix):
    if b.opset >= 20:
        return b.node("Gelu", [x], prefix, approximate=layer.approximate), shape
    if layer.approximate == "tanh":     # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = b.node("Mul", [b.node("Mul", [x, x], prefix), x], prefix)
        inner = b.node("Add", [x, b.node("Mul", [cube, _scalar(b, prefix, "c", 0.044715)],
                                          prefix)], prefix)
        phi = b.node("Tanh", [b.node("Mul", [inner, _scalar(b, prefix, "k", math.sqrt(2 / math.pi))],
                                     prefix)], prefix)
    else:                               # 0.5 x (1 + erf(x / sqrt 2))
        phi = b.node("Erf", [b.node("Div", [x, _scalar(b, prefix, "sqrt2", math.sqrt(2))],
                                    prefix)], prefix)
    one = b.node("Add", [phi, _scalar(b, prefix, "one", 1.0)], prefix)
    half = b.node("Mul", [x, _scalar(b, prefix, "half", 0.5)], prefix)
    return b.node("Mul", [half, one], prefix), shape


@register_onnx_exporter(LayerNorm)
def _layer_norm(layer, b, x, shape, prefix):
    k = len(layer.normalized_shape)
    params = [b.param(layer, key, prefix) for key in ("weight", "bias")] \
        if layer.elementwise_affine else \
        [b.const(join_key(prefix, key), np.full(layer.normalized_shape, v, np.float32))
         for key, v in (("weight", 1.0), ("bias", 0.0))]
    if b.opset >= 17:
        return b.node("LayerNormalization", [x, *params], prefix, axis=-k,
                      epsilon=layer.eps), shape
    axes = list(range(len(shape) + 1 - k, len(shape) + 1))
    centred = b.node("Sub", [x, reduce_node(b, "ReduceMean", x, axes, prefix)], prefix)
    var = reduce_node(b, "ReduceMean", b.node("Mul", [centred, centred], prefix), axes, prefix)
    std = b.node("Sqrt", [b.node("Add", [var, _scalar(b, prefix, "eps", layer.eps)], prefix)],
                 prefix)
    normed = b.node("Div", [centred, std], prefix)
    return b.node("Add", [b.node("Mul", [normed, params[0]], prefix), params[1]], prefix), shape


@register_onnx_exporter(Reduce)
def _reduce(layer, b, x, shape, prefix):
    op = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax"}[layer.op]
    return reduce_node(b, op, x, layer.axes, prefix, layer.keepdims), layer.output_shape(shape)


@register_onnx_exporter(Power)
def _power(layer, b, x, shape, prefix):
    if layer.exponent == 0.5:
        return b.node("Sqrt", [x], prefix), shape
    if layer.exponent == -1.0:
        return b.node("Reciprocal", [x], prefix), shape
    return b.node("Pow", [x, _scalar(b, prefix, "exponent", layer.exponent)], prefix), shape


@register_onnx_exporter(Expand)
def _expand(layer, b, x, shape, prefix):
    target = b.const(join_key(prefix, "shape"), np.array((1,) + layer.shape, dtype=np.int64))
    return b.node("Expand", [x, target], prefix), layer.output_shape(shape)


@register_onnx_exporter(BatchedLinear)
def _batched_linear(layer, b, x, shape, prefix):
    weight = b.const(join_key(prefix, "weight"), np.ascontiguousarray(
        np.asarray(layer.params["weight"], np.float32).T))
    out = b.node("MatMul", [x, weight], prefix)
    if "bias" in layer.params:
        out = b.node("Add", [out, b.param(layer, "bias", prefix)], prefix)
    return out, layer.output_shape(shape)
