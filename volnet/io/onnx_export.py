"""Export a volnet network to an ONNX file (inference graph, float32, dynamic batch).

Each layer type has a small converter that appends ONNX nodes; containers
recurse (``Sequential`` chains, ``Residual`` adds, ``Concat`` concatenates
along channels). Parameters become initializers named by their state-dict
keys (``features.0.weight``), so an exported file reads like the network.
Dropout exports as Identity (inference). ``onnx`` is imported only here.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from volnet.errors import ConfigError
from volnet.io._optional import require
from volnet.io.onnx_graph import Graph, Reshape
from volnet.io.onnx_metadata import preprocessing_props
from volnet.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAffine,
    Concat,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    LeakyReLU,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
    Residual,
    Scale,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from volnet.layers.base import join_key
from volnet.layers.side_branch import SideBranch

OPSET = 17
EXPORTERS: dict[type, callable] = {}


def register_onnx_exporter(layer_type: type):
    """Decorator: ``fn(layer, builder, x, shape, prefix) -> (output name, output shape)``."""
    def decorate(fn):
        EXPORTERS[layer_type] = fn
        return fn
    return decorate


class _Builder:
    """Accumulates ONNX nodes and initializers with unique tensor names."""

    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.names = [], [], set()

    def fresh(self, hint: str) -> str:
        name, i = hint or "t", 1
        while name in self.names:
            name, i = f"{hint}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, name: str, array) -> str:
        name = self.fresh(name)
        array = np.asarray(array)
        array = np.ascontiguousarray(array) if array.ndim else array.copy()   # 0-d stays 0-d
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def param(self, layer, key: str, prefix: str) -> str:
        return self.const(join_key(prefix, key), np.asarray(layer.params.get(key, layer.buffers.get(key)),
                                                            dtype=np.float32))

    def node(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        out = self.fresh(f"/{prefix}/{op}" if prefix else op)   # PyTorch's scope naming
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _emit(layer, b: _Builder, x: str, shape: tuple, prefix: str):
    for cls in type(layer).__mro__:
        if cls in EXPORTERS:
            return EXPORTERS[cls](layer, b, x, shape, prefix)
    raise ConfigError(f"no ONNX exporter for {type(layer).__name__} at {prefix or 'the top level'}; "
                      "register one with volnet.io.onnx_export.register_onnx_exporter")


def to_onnx_model(net, input_shape: tuple[int, ...], opset: int = OPSET, check: bool = True,
                  preprocessing: dict | None = None):
    """Build the ``onnx.ModelProto`` of ``net`` for per-example ``input_shape`` (C, H, W).

    ``check`` runs ONNX's model checker on the result (``export_onnx`` checks the file instead).
    ``preprocessing`` (default ``net.preprocessing``, which checkpoints and imports carry):
    mean, std and class names, written to ``metadata_props`` with the input shape.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from onnx import TensorProto, helper, numpy_helper

    input_shape = tuple(int(d) for d in input_shape)
    out_shape = net.output_shape(input_shape)   # fails early, naming the layer, on a bad shape
    b = _Builder(helper, numpy_helper)
    b.names.add("input")
    out, _ = _emit(net, b, "input", input_shape, "")
    b.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    graph = helper.make_graph(
        b.nodes, "volnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="volnet")
    if preprocessing is None:
        preprocessing = getattr(net, "preprocessing", None) or {}
    helper.set_model_props(model, preprocessing_props(preprocessing, input_shape))
    if check:
        onnx.checker.check_model(model)
    return model


def export_onnx(net, path, input_shape: tuple[int, ...], opset: int = OPSET,
                preprocessing: dict | None = None):
    """Write ``net`` as an ONNX file for inputs (N, *input_shape), N dynamic.

    The file is written to a temporary name and renamed, so an existing file is
    never left half-written; it gets the usual permissions (0666 less the umask).
    Parameters are stored as float32. The input shape and, where known, the mean,
    std and class names (``preprocessing``, default ``net.preprocessing``) go into
    ``metadata_props`` as ``volnet.input_shape``, ``volnet.mean``, ... (JSON), so a
    runtime sees that pixels are divided by 255 and normalised; ``load_onnx`` reads
    them back.

    Args:
        net: Any volnet layer or container (zoo models included).
        path: Destination ``.onnx`` file.
        input_shape: Per-example input shape (C, H, W) or (features,).
        opset: ONNX opset version (default 17).
        preprocessing: {"mean", "std", "class_names"} (lists), as checkpoints record it.

    Returns:
        The path written.

    Example:
        >>> import tempfile, os, volnet as vn
        >>> path = os.path.join(tempfile.mkdtemp(), "lenet.onnx")
        >>> export_onnx(vn.models.lenet5(), path, (1, 28, 28)) == path
        True
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from volnet.io.checkpoint import _umask

    model = to_onnx_model(net, input_shape, opset, check=False, preprocessing=preprocessing)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".volnet-", suffix=".onnx.tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual file mode
        with os.fdopen(handle, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        onnx.checker.check_model(tmp)   # checked as written, before it takes the final name
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---- containers -----------------------------------------------------------------
@register_onnx_exporter(Sequential)
def _sequential(layer, b, x, shape, prefix):
    for name, child in layer.named_children():
        x, shape = _emit(child, b, x, shape, join_key(prefix, name))
    return x, shape


@register_onnx_exporter(Residual)
def _residual(layer, b, x, shape, prefix):
    names = {id(child): name for name, child in layer.named_children()}
    body, body_shape = _emit(layer.body, b, x, shape, join_key(prefix, names[id(layer.body)]))
    short = x
    if layer.shortcut is not None:
        short, _ = _emit(layer.shortcut, b, x, shape, join_key(prefix, names[id(layer.shortcut)]))
    out = b.node("Add", [body, short], prefix)
    if layer.activation is not None:
        return _emit(layer.activation, b, out, body_shape, join_key(prefix, "activation"))
    return out, body_shape


@register_onnx_exporter(Concat)
def _concat(layer, b, x, shape, prefix):
    outs = [_emit(child, b, x, shape, join_key(prefix, name))[0]
            for name, child in layer.named_children()]
    return b.node("Concat", outs, prefix, axis=1), layer.output_shape(shape)


@register_onnx_exporter(SideBranch)
def _side_branch(layer, b, x, shape, prefix):
    # An auxiliary head runs only while training: the inference graph is the main path.
    return x, shape


@register_onnx_exporter(Graph)
def _graph(layer, b, x, shape, prefix):
    names, shapes = {layer.input_name: x}, {layer.input_name: shape}
    for node in layer.nodes:
        ins = [names[i] for i in node.inputs]
        path = join_key(prefix, node.name)
        if node.kind == "layer":
            out, out_shape = _emit(layer[node.name], b, ins[0], shapes[node.inputs[0]], path)
        elif node.kind == "add":
            out, out_shape = b.node("Add", ins, path), shapes[node.inputs[0]]
        else:
            out = b.node("Concat", ins, path, axis=1)
            first = shapes[node.inputs[0]]
            out_shape = (sum(shapes[i][0] for i in node.inputs),) + first[1:]
        names[node.output], shapes[node.output] = out, out_shape
    return names[layer.output_name], shapes[layer.output_name]


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


import volnet.io.onnx_export_ops  # noqa: F401 - registers the exporters of the import layers
