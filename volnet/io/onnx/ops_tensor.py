"""ONNX operators on whole tensors: arithmetic with NumPy broadcasting (with a constant, or
of two computed tensors), Max/Min, Sum, Concat, the reshaping family (Reshape, Flatten,
Squeeze, Unsqueeze, Transpose), Cast and the pass-through Identity/Dropout (Split, Slice,
Pad, Expand: :mod:`volnet.io.onnx.ops_slicing`).

volnet keeps the batch axis first and free: a node may reshape, pad or permute within
each example, never across the batch. A Reshape whose target fixes the batch to the size
the file declares (Caffe2 writes ``[1, N]``) is read as keeping the batch axis when the
other sizes agree, and the import notes say so.
"""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.attributes import nshape, refuse
from volnet.io.onnx.fold import axes_of
from volnet.io.onnx.registry import handles
from volnet.layers import (
    BatchedLinear,
    BinaryOp,
    ConstantOp,
    Flatten,
    Linear,
    Reshape,
    Scale,
    Transpose,
)

OPS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}


def _alias(imp, node, source):
    imp.alias[node.output[0]] = imp.name(source)


@handles("Identity", "Dropout")
def identity(imp, node, a):
    source = imp.computed(node)
    if node.op_type == "Dropout":
        training = imp.const(node, 2, "training_mode", optional=True)
        if training is not None and bool(training):
            raise refuse(node, "training_mode", "training_mode=True drops at inference",
                         "export with training_mode False (model.eval())")
        if len(node.output) > 1 and node.output[1]:
            # Caffe2's opset-9 files declare the mask even in inference graphs; there it is
            # all ones (nothing dropped), a constant that broadcasts along the batch
            imp.consts[node.output[1]] = np.ones((1, *imp.shape(source)), dtype=bool)
    _alias(imp, node, source)


@handles("Cast")
def cast(imp, node, a):
    target = imp.onnx.TensorProto.DataType.Name(a["to"])
    if target not in ("FLOAT", "DOUBLE"):
        raise refuse(node, "to", f"a cast of the computed tensor to {target}",
                     "volnet computes in float32/float64; casts to FLOAT or DOUBLE import")
    _alias(imp, node, imp.computed(node))


def _constant_op(imp, node, source, value, reverse):
    """``source <op> value`` as a layer; a MatMul's bias folds into its Linear."""
    op = OPS[node.op_type]
    value = np.asarray(value)
    shape = imp.shape(source)
    layer = imp.layers.get(imp.producer.get(source, ""))
    if (op == "add" and isinstance(layer, (Linear, BatchedLinear)) and "bias" not in layer.params
            and value.size == shape[-1] and value.shape[-1:] == shape[-1:]
            and value.ndim <= 2 and imp.nodes[-1].output == source):
        layer.params["bias"] = value.reshape(-1).astype(layer.params["weight"].dtype)
        layer.grads["bias"] = np.zeros_like(layer.params["bias"])
        _alias(imp, node, source)
        return
    if value.ndim > len(shape) + 1:
        raise refuse(node, "B", f"constant of shape {value.shape} has more axes than the input "
                     f"{nshape(shape)}", "reshape the constant to the input's rank")
    if op == "mul" and value.size == 1:     # one number over everything (x * 0.17)
        imp.add_layer(node, Scale(float(value.reshape(-1)[0])), source)
        return
    imp.add_layer(node, ConstantOp(op, value.shape, reverse=reverse, value=value.astype(
        np.float64 if value.dtype == np.float64 else np.float32)), source)


@handles("Add", "Sub", "Mul", "Div")
def arithmetic(imp, node, a):
    if a.get("broadcast", 1) == 0 or "axis" in a:
        raise refuse(node, "axis", "opset-6 style broadcasting with an axis is not supported",
                     "convert the model to opset 7 or later (onnx.version_converter)")
    consts = [imp.is_const(t) for t in node.input]
    if consts == [False, False]:
        x, y = imp.computed(node, 0), imp.computed(node, 1)
        if node.op_type == "Add" and imp.shape(x) == imp.shape(y):
            imp.add_join(node, "add", (x, y), imp.shape(x))
        else:
            _binary(imp, node, OPS[node.op_type], x, y, node.output[0])
        return
    index = consts.index(True)
    _constant_op(imp, node, imp.computed(node, 1 - index), imp.consts[node.input[index]],
                 reverse=index == 0)


def _binary(imp, node, op, x, y, output):
    """A BinaryOp node over two computed tensors, their shapes checked as ONNX broadcasts."""
    sx, sy = imp.shape(x), imp.shape(y)
    if len(sx) != len(sy):
        raise refuse(node, "", f"{node.op_type} of computed tensors {nshape(sx)} and "
                     f"{nshape(sy)} of different ranks would broadcast the batch axis",
                     "give both inputs the same rank (Unsqueeze the smaller)")
    imp.add_layer(node, BinaryOp(op), (x, y), output=output)


@handles("Max", "Min")
def extremum(imp, node, a):
    """Variadic Max/Min: computed inputs pairwise by BinaryOp, then the constants (combined)
    by one ConstantOp."""
    op = node.op_type.lower()
    computed = [imp.name(t) for t in node.input if t and not imp.is_const(t)]
    consts = [imp.consts[t] for t in node.input if t and imp.is_const(t)]
    if not computed:
        raise refuse(node, "inputs", "all inputs are constants", "fold them before exporting")
    source = computed[0]
    for i, other in enumerate(computed[1:], start=1):
        last = i == len(computed) - 1 and not consts
        out = node.output[0] if last else f"{node.output[0]}__{i}"
        _binary(imp, node, op, source, other, out)
        source = out
    if consts:
        try:
            bound = (np.maximum if op == "max" else np.minimum).reduce(
                np.broadcast_arrays(*[np.asarray(c, np.float64) for c in consts]))
        except ValueError:
            raise refuse(node, "inputs", f"constants of shapes {[np.shape(c) for c in consts]} "
                         "do not broadcast", "give broadcastable constants") from None
        if bound.ndim > len(imp.shape(source)) + 1:
            raise refuse(node, "inputs", f"a constant of shape {bound.shape} has more axes than "
                         f"the input {nshape(imp.shape(source))}", "reshape it to the input's rank")
        dtype = np.float64 if any(np.asarray(c).dtype == np.float64 for c in consts) else np.float32
        imp.add_layer(node, ConstantOp(op, bound.shape, value=bound.astype(dtype)), source)
    elif len(computed) == 1:
        _alias(imp, node, source)


@handles("Sum")
def sum_(imp, node, a):
    computed = [imp.name(t) for t in node.input if not imp.is_const(t)]
    consts = [imp.consts[t] for t in node.input if imp.is_const(t)]
    if not computed:
        raise refuse(node, "inputs", "all inputs are constants", "fold them before exporting")
    shapes = [imp.shape(t) for t in computed]
    if len(set(shapes)) != 1:
        raise refuse(node, "inputs", f"computed inputs of shapes {shapes} differ",
                     "volnet sums computed tensors of equal shapes")
    if not consts:
        if len(computed) == 1:
            _alias(imp, node, computed[0])
        else:
            imp.add_join(node, "add", computed, shapes[0])
        return
    source = computed[0]
    if len(computed) > 1:
        source = f"{node.output[0]}__sum"
        imp.add_join(node, "add", computed, shapes[0], output=source)
    total = np.asarray(sum(consts[1:], consts[0]), np.float32)
    imp.add_layer(node, ConstantOp("add", total.shape, value=total), source)


@handles("Concat")
def concat(imp, node, a):
    if any(imp.is_const(t) for t in node.input):
        raise refuse(node, "inputs", "it joins a computed tensor with a constant",
                     "volnet concatenates computed tensors only (fold the constant part "
                     "into a preceding layer's bias)")
    sources = [imp.name(t) for t in node.input]
    shapes = [imp.shape(t) for t in sources]
    rank = len(shapes[0]) + 1
    axis = a["axis"] + rank if a["axis"] < 0 else a["axis"]
    if axis != 1:
        raise refuse(node, "axis", f"axis {a['axis']} of {nshape(shapes[0])}",
                     "volnet concatenates along the channel axis 1 only")
    if len({s[1:] for s in shapes}) != 1:
        raise refuse(node, "inputs", f"shapes {shapes} differ beyond the channel axis",
                     "inputs must agree on every axis but 1")
    if len(sources) == 1:
        _alias(imp, node, sources[0])
        return
    imp.add_join(node, "concat", sources, (sum(s[0] for s in shapes),) + shapes[0][1:])


def _reshape_to(imp, node, source, shape):
    """Per-example reshape: an alias when nothing changes, Flatten to 1-D, else Reshape."""
    shape = tuple(int(d) for d in shape)
    if shape == imp.shape(source):
        _alias(imp, node, source)
    elif len(shape) == 1:
        imp.add_layer(node, Flatten(), source)
    else:
        imp.add_layer(node, Reshape(shape), source)


@handles("Reshape")
def reshape(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    full, size = (imp.batch, *shape), int(np.prod(shape))
    target = [int(d) for d in imp.const(node, 1, "shape")]
    literal_batch = bool(target) and target[0] > 0 and node.input[1] not in imp.from_shape
    if not a.get("allowzero", 0):
        target = [full[i] if d == 0 and i < len(full) else d for i, d in enumerate(target)]
    rest = target[1:]
    fits = target and rest.count(-1) <= 1 and min(rest, default=1) >= -1 and (
        (-1 in rest and size % max(int(np.prod([d for d in rest if d != -1])), 1) == 0)
        or (-1 not in rest and int(np.prod(rest)) == size))
    if not fits or target[0] not in (-1, imp.batch) or (target[0] == -1 and -1 in rest):
        raise refuse(node, "shape", f"target {target} from input {nshape(shape)} "
                     "does not keep the batch axis", "volnet reshapes within each example: "
                     "targets like [0, ...] or [-1, C*H*W] work")
    known = int(np.prod([d for d in rest if d != -1])) if rest else 1
    rest = [size // known if d == -1 else d for d in rest]
    if literal_batch:
        imp.note(node, f"target {target} fixes the batch to {target[0]}; read as keeping the "
                 f"batch axis, {nshape(rest)}")
    _reshape_to(imp, node, source, rest)


@handles("Flatten")
def flatten(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    axis = a.get("axis", 1)
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if axis == 0 or any(d != 1 for d in shape[:axis - 1]):
        raise refuse(node, "axis", f"axis {a.get('axis', 1)} of {nshape(shape)} merges the batch "
                     "axis with others", "use axis 1 (or an axis preceded only by size-1 axes)")
    if axis == 1:
        imp.add_layer(node, Flatten(), source)
    else:
        _reshape_to(imp, node, source, (int(np.prod(shape)),))


@handles("Squeeze", "Unsqueeze")
def squeeze(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    axes = axes_of(node, a, [None] + [imp.consts.get(t) for t in node.input[1:]], imp.opset)
    if node.op_type == "Squeeze":
        rank = len(shape) + 1
        axes = [i for i, d in enumerate(shape, 1) if d == 1] if axes is None else \
            [ax + rank if ax < 0 else ax for ax in axes]
        if 0 in axes or any(shape[ax - 1] != 1 for ax in axes):
            raise refuse(node, "axes", f"axes {axes} of {nshape(shape)} include the batch axis or an "
                         "axis longer than 1", "squeeze size-1 axes after the batch axis")
        out = tuple(d for i, d in enumerate(shape, 1) if i not in axes)
    else:
        rank = len(shape) + 1 + len(axes)
        axes = sorted(ax + rank if ax < 0 else ax for ax in axes)
        if 0 in axes:
            raise refuse(node, "axes", "a new axis 0 would move the batch axis",
                         "unsqueeze at axes >= 1")
        out = list(shape)
        for ax in axes:
            out.insert(ax - 1, 1)
    if out:
        _reshape_to(imp, node, source, out)
    else:
        raise refuse(node, "axes", f"squeezing {nshape(shape)} leaves the batch axis alone",
                     "keep at least one axis per example")


@handles("Transpose")
def transpose(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    perm = list(a.get("perm", range(len(shape), -1, -1)))
    if perm[0] != 0:
        raise refuse(node, "perm", f"{perm} moves the batch axis",
                     "permute the axes after the batch axis only (perm[0] = 0)")
    if perm == sorted(perm):
        _alias(imp, node, source)
    else:
        imp.add_layer(node, Transpose([p - 1 for p in perm[1:]]), source)
