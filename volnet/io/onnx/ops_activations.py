"""ONNX activation operators that become volnet layers: Relu, Sigmoid, Tanh, LeakyRelu,
Elu, PRelu, Clip (ReLU6 for [0, 6]) and Softmax/LogSoftmax.

Handlers are registered with ``@handles("Op")``.
"""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.attributes import nshape, refuse
from volnet.io.onnx.registry import handles
from volnet.layers import (
    ELU,
    Clip,
    LeakyReLU,
    LogSoftmax,
    PReLU,
    ReLU,
    ReLU6,
    Reshape,
    Sigmoid,
    Softmax,
    Tanh,
)


@handles("Relu", "Sigmoid", "Tanh")
def simple(imp, node, a):
    imp.add_layer(node, {"Relu": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh}[node.op_type](),
                  imp.computed(node))


@handles("LeakyRelu")
def leaky_relu(imp, node, a):
    imp.add_layer(node, LeakyReLU(a.get("alpha", 0.01)), imp.computed(node))


@handles("Elu")
def elu(imp, node, a):
    imp.add_layer(node, ELU(a.get("alpha", 1.0)), imp.computed(node))


@handles("PRelu")
def prelu(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    slope = np.asarray(imp.const(node, 1, "slope"), dtype=np.float64)
    if slope.ndim == len(shape) + 1:
        if slope.shape[0] != 1:
            raise refuse(node, "slope", f"slope of shape {slope.shape} varies along the batch "
                         f"axis of {nshape(shape)}", "give one slope per channel (C, 1, 1)")
        slope = slope[0]
    if slope.size == 1:
        layer = PReLU(1)
    elif shape and slope.ndim == len(shape) and slope.shape[0] == shape[0] \
            and all(d == 1 for d in slope.shape[1:]):
        layer = PReLU(shape[0])                          # one slope per channel
    elif slope.ndim <= len(shape):
        layer = PReLU(weight_shape=slope.shape)          # NumPy broadcasting, right-aligned
    else:
        raise refuse(node, "slope", f"slope of shape {slope.shape} has more axes than the input "
                     f"{nshape(shape)}", "give one slope per channel (C, 1, 1) or a scalar")
    layer.params["weight"][...] = slope.reshape(layer.params["weight"].shape)
    imp.add_layer(node, layer, source, weight_index=1)


@handles("Clip")
def clip(imp, node, a):
    if imp.opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        low, high = (imp.const(node, i, name, optional=True) for i, name in ((1, "min"), (2, "max")))
    for value, what in ((low, "min"), (high, "max")):
        if value is not None and np.size(value) != 1:
            raise refuse(node, what, f"a bound of shape {np.shape(value)}", "give a scalar bound")
    low = None if low is None or float(np.ravel(low)[0]) <= -3.4e38 else float(np.ravel(low)[0])
    high = None if high is None or float(np.ravel(high)[0]) >= 3.4e38 else float(np.ravel(high)[0])
    layer = ReLU6() if (low, high) == (0.0, 6.0) else Clip(low, high)
    imp.add_layer(node, layer, imp.computed(node))


@handles("Softmax", "LogSoftmax")
def softmax(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    rank = len(shape) + 1
    axis = a.get("axis", -1 if imp.opset >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    cls = Softmax if node.op_type == "Softmax" else LogSoftmax
    if not 0 < axis < rank:
        raise refuse(node, "axis", f"axis {a.get('axis', axis)} of input {nshape(shape)} is the "
                     "batch axis or out of range", "volnet normalises within each example: "
                     "use an axis from 1 to rank-1")
    if imp.opset >= 13 or axis == rank - 1 or all(d == 1 for d in shape[axis:]):
        imp.add_layer(node, cls(axis), source)
        return
    # before opset 13 the input is coerced to 2-D at `axis`: normalise over all later axes
    flat = f"{node.output[0]}__flat"
    imp.add_layer(node, Reshape(shape[:axis - 1] + (int(np.prod(shape[axis - 1:])),)), source,
                  output=flat)
    imp.add_layer(node, cls(axis), flat, output=f"{node.output[0]}__norm")
    imp.add_layer(node, Reshape(shape), f"{node.output[0]}__norm")
    imp.note(node, f"opset {imp.opset} normalises axes {axis}.. of {nshape(shape)} together")
