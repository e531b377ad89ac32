"""Constant folding for the ONNX importer: nodes whose inputs are all known become constants
before any layer is built from them.

PyTorch computes reshape targets at run time (``Shape -> Gather -> Unsqueeze -> Concat``),
Caffe2 builds batch-norm scales with ``Unsqueeze``; volnet evaluates those small integer
graphs once, at import, with NumPy. ``Shape`` of a computed tensor folds too: every tensor's
shape is known while importing, with the batch size the file declares (1 when symbolic).
"""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.attributes import refuse
from volnet.io.onnx.registry import FOLDERS, folds


def axes_of(node, a, inputs, opset, index=1):
    """The ``axes`` of Squeeze/Unsqueeze/ReduceX: an attribute before opset 13, an input after."""
    if opset >= 13 and len(inputs) > index and inputs[index] is not None:
        return [int(v) for v in np.ravel(inputs[index])]
    return None if a.get("axes") is None else [int(v) for v in a["axes"]]


@folds("Constant")
def _constant(node, a, inputs, opset):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            value = a[key]
            dtype = np.float32 if "float" in key else np.int64
            return [np.asarray(value, dtype=None if key == "value" else dtype)]
    raise refuse(node, "value", f"the attributes {sorted(a)} hold no numeric tensor",
                 "use value, value_float(s) or value_int(s)")


@folds("ConstantOfShape")
def _constant_of_shape(node, a, inputs, opset):
    value = a.get("value", np.zeros(1, np.float32))
    return [np.full(tuple(int(d) for d in inputs[0]), value.reshape(-1)[0], dtype=value.dtype)]


@folds("Shape")
def _shape(node, a, inputs, opset):
    return [np.array(inputs[0].shape, dtype=np.int64)[a.get("start", 0):a.get("end", None)]]


@folds("Identity", "Dropout")
def _identity(node, a, inputs, opset):
    if node.op_type == "Dropout" and len(inputs) > 2 and inputs[2] is not None and bool(inputs[2]):
        raise refuse(node, "training_mode", "training_mode=True drops at random",
                     "export with training_mode False (model.eval())")
    return [inputs[0], np.ones(inputs[0].shape, dtype=bool)]   # inference: nothing dropped


@folds("Cast")
def _cast(node, a, inputs, opset):
    from onnx import TensorProto, helper

    target = TensorProto.DataType.Name(a["to"])
    plain = {"FLOAT", "DOUBLE", "FLOAT16", "BOOL", "INT8", "INT16", "INT32", "INT64",
             "UINT8", "UINT16", "UINT32", "UINT64"}
    if target not in plain or inputs[0].dtype.kind not in "biuf":
        raise refuse(node, "to", f"a cast from {inputs[0].dtype} to {target}",
                     f"volnet folds casts between NumPy's types: {', '.join(sorted(plain))}")
    return [inputs[0].astype(helper.tensor_dtype_to_np_dtype(a["to"]))]


@folds("Gather")
def _gather(node, a, inputs, opset):
    data, indices = inputs
    return [np.take(data, indices.astype(np.int64), axis=a.get("axis", 0))]


@folds("Unsqueeze")
def _unsqueeze(node, a, inputs, opset):
    axes = axes_of(node, a, inputs, opset)
    rank = inputs[0].ndim + len(axes)
    out = inputs[0]
    for axis in sorted(ax % rank for ax in axes):
        out = np.expand_dims(out, axis)
    return [out]


@folds("Squeeze")
def _squeeze(node, a, inputs, opset):
    axes = axes_of(node, a, inputs, opset)
    x = inputs[0]
    return [np.squeeze(x) if axes is None else np.squeeze(x, tuple(ax % x.ndim for ax in axes))]


@folds("Concat")
def _concat(node, a, inputs, opset):
    return [np.concatenate(inputs, axis=a["axis"])]


@folds("Reshape")
def _reshape(node, a, inputs, opset):
    x, shape = inputs[0], [int(d) for d in inputs[1]]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@folds("Flatten")
def _flatten(node, a, inputs, opset):
    x = inputs[0]
    axis = a.get("axis", 1) % max(x.ndim, 1) if a.get("axis", 1) < 0 else a.get("axis", 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@folds("Transpose")
def _transpose(node, a, inputs, opset):
    return [np.transpose(inputs[0], a.get("perm"))]


@folds("Slice")
def _slice(node, a, inputs, opset):
    x = inputs[0]
    if opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = inputs[1], inputs[2]
        axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else None
        steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else None
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[int(axis)] = slice(int(start), int(end), int(step))
    return [x[tuple(index)]]


@folds("Split")
def _split(node, a, inputs, opset):
    x, axis = inputs[0], a.get("axis", 0)
    sizes = a.get("split")
    if opset >= 13:
        sizes = None if len(inputs) < 2 or inputs[1] is None else [int(v) for v in inputs[1]]
    if sizes is None:
        parts = a.get("num_outputs", len(node.output))
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - i * step) for i in range(parts)]
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


@folds("Add", "Sub", "Mul", "Div")
def _arithmetic(node, a, inputs, opset):
    x, y = inputs
    if node.op_type == "Div" and np.issubdtype(np.result_type(x, y), np.integer):
        return [np.trunc(x / y).astype(np.result_type(x, y))]   # ONNX integer Div truncates
    fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op_type]
    return [fn(x, y).astype(np.result_type(x, y))]


def fold(node, a: dict, inputs: list, opset: int) -> list[np.ndarray]:
    """Evaluate ``node`` on constant ``inputs`` (None for an omitted optional input)."""
    if any(x is not None and not isinstance(x, np.ndarray) for x in inputs):
        raise refuse(node, "inputs", "an input is not a tensor (a sequence or an optional)",
                     "volnet folds tensor constants only")
    try:
        return FOLDERS[node.op_type](node, a, inputs, opset)
    except (ValueError, IndexError, KeyError, TypeError, AttributeError) as err:
        raise refuse(node, "", f"cannot evaluate it on its constant inputs "
                     f"({type(err).__name__}: {str(err)[:120]})",
                     "check the graph with onnx.checker and onnxruntime") from None
