"""ONNX operators of today's CNN families (EfficientNet, MobileNet v3, RegNet-Y, ConvNeXt,
GhostNet, ResNeSt): HardSigmoid, HardSwish, Erf, Gelu, LayerNormalization, the reductions
ReduceSum/ReduceMean/ReduceMax, and Pow (constant exponent), Sqrt and Reciprocal.
Registered with ``@handles``."""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.attributes import nshape, refuse
from volnet.io.onnx.fold import axes_of
from volnet.io.onnx.registry import handles
from volnet.layers import (
    GELU,
    Erf,
    Flatten,
    GlobalAvgPool2d,
    HardSigmoid,
    HardSwish,
    LayerNorm,
    Power,
    Reduce,
)


@handles("HardSigmoid")
def hard_sigmoid(imp, node, a):
    imp.add_layer(node, HardSigmoid(a.get("alpha", 0.2), a.get("beta", 0.5)), imp.computed(node))


@handles("HardSwish")
def hard_swish(imp, node, a):
    imp.add_layer(node, HardSwish(), imp.computed(node))


@handles("Erf")
def erf(imp, node, a):
    imp.add_layer(node, Erf(), imp.computed(node))


@handles("Gelu")
def gelu(imp, node, a):
    approximate = a.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise refuse(node, "approximate", f"{approximate!r}", "use 'none' or 'tanh'")
    imp.add_layer(node, GELU(approximate), imp.computed(node))


@handles("LayerNormalization")
def layer_norm(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    rank = len(shape) + 1
    axis = int(a.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise refuse(node, "axis", f"{a.get('axis', -1)} of {nshape(shape)} normalises across "
                     "the batch", "normalise trailing axes after the batch axis")
    for extra, what in zip(node.output[1:], ("Mean", "InvStdDev")):
        if extra:       # declared by some exporters; an error only if a node reads it
            imp.unavailable[extra] = f"the {what} output of LayerNormalization {node.name!r}"
    if a.get("stash_type", 1) != 1:
        raise refuse(node, "stash_type", f"{a['stash_type']}", "use float statistics (1)")
    normalized = shape[axis - 1:]
    layer = LayerNorm(normalized, eps=a.get("epsilon", 1e-5))
    for index, key in ((1, "weight"), (2, "bias")):
        value = imp.const(node, index, key, optional=index == 2)
        if value is None:
            continue
        try:
            layer.params[key][...] = np.broadcast_to(value, normalized)
        except ValueError:
            raise refuse(node, key, f"shape {value.shape} does not broadcast to the normalised "
                         f"shape {normalized}", "give it the normalised axes' shape") from None
    imp.add_layer(node, layer, source, weight_index=1)


@handles("ReduceSum", "ReduceMean", "ReduceMax")
def reduce(imp, node, a):
    """Over non-batch axes; the mean over H and W of (N, C, H, W) is global average pooling
    (torchvision's ``x.mean([2, 3])``), kept as that layer for the tools that know it."""
    source = imp.computed(node)
    shape = imp.shape(source)
    rank = len(shape) + 1
    moved = {"ReduceSum": 13}.get(node.op_type, 18)      # axes became an input at this opset
    axes = axes_of(node, a, [None] + [imp.consts.get(t) for t in node.input[1:]],
                   13 if imp.opset >= moved else 0)
    if imp.opset >= moved and len(node.input) > 1 and node.input[1] and axes is None:
        imp.const(node, 1, "axes")                        # computed axes: refused, named
    if axes is None or len(axes) == 0:
        if a.get("noop_with_empty_axes", 0):
            imp.alias[node.output[0]] = imp.name(source)
            return
        raise refuse(node, "axes", f"no axes: a reduction of all of {nshape(shape)}, the batch "
                     "axis included", "reduce over the axes after the batch axis")
    axes = sorted(int(v) + rank if int(v) < 0 else int(v) for v in axes)
    if 0 in axes or any(not 0 < v < rank for v in axes):
        raise refuse(node, "axes", f"{axes} of {nshape(shape)} include the batch axis or lie "
                     "outside the tensor", "reduce over the axes after the batch axis")
    keep = bool(a.get("keepdims", 1))
    if node.op_type == "ReduceMean" and len(shape) == 3 and axes == [2, 3]:
        if keep:
            imp.add_layer(node, GlobalAvgPool2d(), source)
        else:
            pooled = imp.add_layer(node, GlobalAvgPool2d(), source, output=f"{node.output[0]}__pool")
            imp.add_layer(node, Flatten(), pooled)
        return
    op = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max"}[node.op_type]
    imp.add_layer(node, Reduce(op, axes, keep), source)


@handles("Pow")
def power(imp, node, a):
    source = imp.computed(node)
    exponent = imp.const(node, 1, "Y (exponent)")
    if np.size(exponent) != 1:
        raise refuse(node, "Y", f"an exponent of shape {np.shape(exponent)}",
                     "volnet imports Pow with one constant exponent")
    imp.add_layer(node, Power(float(np.ravel(exponent)[0])), source)


@handles("Sqrt", "Reciprocal")
def root(imp, node, a):
    imp.add_layer(node, Power(0.5 if node.op_type == "Sqrt" else -1.0), imp.computed(node))
