"""ONNX operators that become volnet layers with weights or windows: Conv, Gemm, MatMul,
the pools, BatchNormalization and LRN (the activations: :mod:`volnet.io.onnx.ops_activations`).

Each handler reads its node, checks what volnet can represent and appends layers through
the :class:`~volnet.io.onnx.importer.Importer`. Add an operator with ``@handles("Op")``.
"""

from __future__ import annotations

import math

import numpy as np

from volnet.io.onnx.attributes import nshape, pair, refuse, window_pads
from volnet.io.onnx.registry import handles
from volnet.layers import (
    AvgPool2d,
    BatchedLinear,
    BatchNorm1d,
    BatchNorm2d,
    ConstantOp,
    ConstantPad2d,
    Conv2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    Linear,
    LocalResponseNorm,
    MatMul,
    MaxPool2d,
)


def _spatial(imp, node, source):
    shape = imp.shape(source)
    if len(shape) != 3:
        raise refuse(node, "input", f"per-example shape {shape} is not (C, H, W)",
                     "volnet imports 2-D convolution and pooling on (N, C, H, W) tensors")
    return shape


def _padded_source(imp, node, source, pads, symmetric_ok, value):
    """Padding the layer can do itself as (h, w), or a ConstantPad2d node first."""
    top, left, bottom, right = pads
    if (top, left) == (bottom, right) and symmetric_ok((top, left)):
        return source, (top, left)
    pad_out = f"{node.output[0]}__pad"
    imp.add_layer(node, ConstantPad2d((left, right, top, bottom), value), source, output=pad_out)
    if (top, left) != (bottom, right):
        imp.note(node, f"asymmetric pads {list(pads)} became a ConstantPad2d layer before it")
    return pad_out, (0, 0)


@handles("Conv")
def conv(imp, node, a):
    source = imp.computed(node)
    w = imp.const(node, 1, "W (weight)")
    if w.ndim != 4:
        raise refuse(node, "W", f"weight shape {w.shape} is not 2-D convolution",
                     "volnet imports Conv over (N, C, H, W) with a 4-D weight")
    _, h, wd = _spatial(imp, node, source)
    group = int(a.get("group", 1))
    stride, dilation = pair(node, a, "strides"), pair(node, a, "dilations")
    pads = window_pads(node, a, (h, wd), w.shape[2:], stride, dilation)
    source, padding = _padded_source(imp, node, source, pads, lambda p: True, 0.0)
    bias = imp.const(node, 2, "B (bias)", optional=True)
    layer = Conv2d(w.shape[1] * group, w.shape[0], w.shape[2:], stride=stride, padding=padding,
                   dilation=dilation, groups=group, bias=bias is not None)
    layer.params["weight"][...] = w
    if bias is not None:
        layer.params["bias"][...] = bias
    imp.add_layer(node, layer, source, weight_index=1)


def _onnx_pool_size(n, k, s, pb, pe, ceil_mode):
    out = (math.ceil if ceil_mode else math.floor)((n + pb + pe - k) / s) + 1
    if ceil_mode and (out - 1) * s >= n + pb:   # a last window starting in the end padding
        out -= 1
    return out


def _pool(imp, node, a, kind):
    source = imp.computed(node)
    _, h, w = _spatial(imp, node, source)
    if len(node.output) > 1 and node.output[1]:     # declared; an error only if a node reads it
        imp.unavailable[node.output[1]] = f"the Indices output of MaxPool {node.name!r}"
    kernel, stride = pair(node, a, "kernel_shape", None), pair(node, a, "strides")
    if pair(node, a, "dilations") != (1, 1):
        raise refuse(node, "dilations", f"{a['dilations']}: dilated pooling is not supported",
                     "use dilations [1, 1]")
    if a.get("storage_order", 0):
        raise refuse(node, "storage_order", "column-major indices are not supported",
                     "use storage_order 0")
    ceil_mode = bool(a.get("ceil_mode", 0))
    pads = window_pads(node, a, (h, w), kernel, stride, (1, 1))
    expected = tuple(_onnx_pool_size(n, k, s, pads[i], pads[i + 2], ceil_mode)
                     for i, (n, k, s) in enumerate(zip((h, w), kernel, stride)))
    half = lambda p: all(v <= k // 2 for v, k in zip(p, kernel))
    include = kind == "max" or bool(a.get("count_include_pad", 0))
    value = -np.inf if kind == "max" else 0.0
    padded, padding = _padded_source(imp, node, source, pads, half, value)
    cls = MaxPool2d if kind == "max" else AvgPool2d
    extra = {} if kind == "max" else {"count_include_pad": include}
    layer = cls(kernel, stride, padding, ceil_mode=ceil_mode, **extra)
    out = node.output[0] if include or padded == source else f"{node.output[0]}__sum"
    imp.add_layer(node, layer, padded, output=out)
    if out != node.output[0]:
        # explicit zero padding counted in every window: rescale by (window size / real pixels),
        # measured by pooling a mask of ones the same way
        mask = np.pad(np.ones((1, 1, h, w), np.float64), ((0, 0), (0, 0), pads[::2], pads[1::2]))
        real = layer.copy().astype(np.float64).forward(mask)[0]
        imp.add_layer(node, ConstantOp("mul", real.shape, value=1.0 / real), out)
    got = imp.shape(node.output[0])[1:]
    if got != expected:
        raise refuse(node, "ceil_mode" if ceil_mode else "pads", f"ONNX gives {expected} "
                     f"outputs here but volnet's {cls.__name__} gives {got}",
                     "export with explicit symmetric pads or without ceil_mode")


@handles("MaxPool")
def max_pool(imp, node, a):
    _pool(imp, node, a, "max")


@handles("AveragePool")
def average_pool(imp, node, a):
    _pool(imp, node, a, "avg")


@handles("GlobalAveragePool", "GlobalMaxPool")
def global_pool(imp, node, a):
    _spatial(imp, node, imp.computed(node))
    imp.add_layer(node, GlobalAvgPool2d() if node.op_type == "GlobalAveragePool"
                  else GlobalMaxPool2d())


@handles("Gemm")
def gemm(imp, node, a):
    source = imp.computed(node)
    if len(imp.shape(source)) != 1:
        raise refuse(node, "A", f"input of shape {nshape(imp.shape(source))} is not 2-D",
                     "flatten to (N, features) before Gemm")
    if a.get("transA", 0):
        raise refuse(node, "transA", "transA=1 mixes the batch axis into the features",
                     "export with transA=0")
    w = imp.const(node, 1, "B (weight)") * a.get("alpha", 1.0)
    w = w if a.get("transB", 0) else w.T
    bias = imp.const(node, 2, "C (bias)", optional=True)
    if bias is not None:
        bias = np.asarray(bias) * a.get("beta", 1.0)
        if bias.ndim == 2 and bias.shape[0] != 1:
            raise refuse(node, "C", f"bias of shape {bias.shape} differs from row to row of "
                         "the batch", "give C as (M,) or (1, M)")
        try:
            bias = np.broadcast_to(bias.reshape(-1) if bias.ndim == 2 else bias, (w.shape[0],))
        except ValueError:
            raise refuse(node, "C", f"bias of shape {bias.shape} does not broadcast to "
                         f"({w.shape[0]},)", "give C as (M,), (1, M) or a scalar") from None
    layer = Linear(w.shape[1], w.shape[0], bias=bias is not None)
    layer.params["weight"][...] = w
    if bias is not None:
        layer.params["bias"][...] = bias
    imp.add_layer(node, layer, source, weight_index=1)


@handles("MatMul")
def matmul(imp, node, a):
    """(N, K) @ (K, M) is a Linear; (N, ..., K) @ (K, M) a BatchedLinear over the last axis;
    two computed tensors (N, ..., M, K) @ (N, ..., K, P) a MatMul layer."""
    if not imp.is_const(node.input[0]) and not imp.is_const(node.input[1]):
        imp.add_layer(node, MatMul(), (imp.computed(node, 0), imp.computed(node, 1)))
        return
    source = imp.computed(node)
    w = imp.const(node, 1, "B (weight)")
    shape = imp.shape(source)
    if w.ndim != 2 or not shape or shape[-1] != w.shape[0]:
        raise refuse(node, "B", f"{nshape(shape)} @ {w.shape} is not a product over the last "
                     "axis", "volnet imports MatMul of (N, ..., K) by a constant (K, M)")
    cls = Linear if len(shape) == 1 else BatchedLinear
    layer = cls(w.shape[0], w.shape[1], bias=False)
    layer.params["weight"][...] = w.T
    imp.add_layer(node, layer, source, weight_index=1)


@handles("BatchNormalization")
def batch_norm(imp, node, a):
    if a.get("training_mode", 0) or any(node.output[1:]):
        raise refuse(node, "training_mode", "training-mode outputs (batch mean/variance) are "
                     "requested", "export the inference graph (model.eval())")
    if a.get("spatial", 1) != 1:
        raise refuse(node, "spatial", "spatial=0 (per-position statistics) is not supported",
                     "export with spatial=1")
    source = imp.computed(node)
    rank = len(imp.shape(source))
    scale = imp.const(node, 1, "scale")
    cls = BatchNorm2d if rank == 3 else BatchNorm1d
    if rank not in (1, 2, 3):
        raise refuse(node, "X", f"per-example shape {imp.shape(source)}",
                     "volnet imports batch norm on (N, C), (N, C, L) or (N, C, H, W)")
    layer = cls(scale.size, eps=a.get("epsilon", 1e-5))
    for i, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
        (layer.params if i < 3 else layer.buffers)[key][...] = imp.const(node, i, key)
    imp.add_layer(node, layer, source, weight_index=1)


@handles("LRN")
def lrn(imp, node, a):
    if a["size"] % 2 == 0:
        raise refuse(node, "size", f"even size {a['size']} centres its window differently "
                     "from volnet's LocalResponseNorm", "only odd sizes import")
    imp.add_layer(node, LocalResponseNorm(a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75),
                                          a.get("bias", 1.0)), imp.computed(node))
