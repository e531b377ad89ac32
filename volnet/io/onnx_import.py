"""Build a volnet network from an ONNX graph (the operators the zoo needs).

Supported: Conv (groups, dilations, symmetric pads), Relu, LeakyRelu, Sigmoid,
Tanh, MaxPool, AveragePool, GlobalAveragePool, Gemm, MatMul (+ Add of a
constant bias), Add, Concat (channels), BatchNormalization, LRN, Flatten,
Reshape (constant shape), Expand (spatial broadcast), Mul/Add by per-channel
constants (ChannelAffine), Dropout, Identity, Softmax and Constant. Any other
operator raises an error naming it. The result is a :class:`Graph`, whose
layers are named after their weights (``features.0`` for ``features.0.weight``)
so state dicts keep PyTorch's keys. ``onnx`` is imported only when called.
"""

from __future__ import annotations

import os
import re

import numpy as np

from volnet.errors import CheckpointError, ConfigError
from volnet.io._onnx_attrs import attrs, pads, pair, per_channel, scope_path
from volnet.io._optional import require
from volnet.io.onnx_graph import Graph, Node, Reshape
from volnet.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelAffine,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    GlobalAvgPool2d,
    Identity,
    LeakyReLU,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
    Upsample,
)

SIMPLE = {"Relu": ReLU, "Sigmoid": Sigmoid, "Tanh": Tanh, "Identity": Identity,
          "Dropout": Identity, "GlobalAveragePool": GlobalAvgPool2d}


class _Importer:
    """Walks the ONNX nodes, turning each into a volnet layer or a Graph node."""

    def __init__(self, model, onnx) -> None:
        from onnx import numpy_helper

        self.graph, self.onnx = model.graph, onnx
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.ranks = self._ranks(model)
        self.layers, self.nodes, self.alias, self.producer = {}, [], {}, {}
        self.used_consts: set[str] = set()

    def _ranks(self, model) -> dict[str, int]:
        """Rank of the graph input; node outputs are filled in as the nodes are imported."""
        return {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.input
                if v.type.tensor_type.HasField("shape")}

    def _track_rank(self, node) -> None:
        # Enough shape knowledge for BatchNorm1d/2d, Concat and Softmax axes, without running
        # ONNX shape inference (which copies every weight).
        rank = self.ranks.get(self.name(node.input[0]) if node.input else "", 4)
        if node.op_type in ("Flatten", "Gemm"):
            rank = 2
        elif node.op_type == "Reshape":
            rank = len(self.consts[node.input[1]])
        for out in node.output:
            self.ranks[out] = rank

    def name(self, tensor: str) -> str:
        return self.alias.get(tensor, tensor)

    def const(self, node, index: int) -> np.ndarray:
        if index >= len(node.input) or node.input[index] not in self.consts:
            raise ConfigError(f"ONNX node {node.name or node.op_type} ({node.op_type}): input "
                              f"{index} must be a constant weight, not a computed tensor")
        self.used_consts.add(node.input[index])
        return self.consts[node.input[index]]

    def child_name(self, node, weight_index: int | None = None) -> str:
        base = ""
        if weight_index is not None and weight_index < len(node.input):
            base = re.sub(r"\.(weight|bias)$", "", node.input[weight_index])
        if not base or base == node.input[weight_index] or base in self.layers:
            base = scope_path(node.name) or node.name or f"{node.op_type.lower()}_{len(self.nodes)}"
        base = base.replace("/", ".").strip(".") or node.op_type.lower()
        name, i = base, 1
        while name in self.layers:
            name, i = f"{base}_{i}", i + 1
        return name

    def add_layer(self, node, layer, weight_index=None, source=None) -> None:
        name = self.child_name(node, weight_index)
        self.layers[name] = layer
        self.nodes.append(Node("layer", name, (self.name(source or node.input[0]),), node.output[0]))
        self.producer[node.output[0]] = name

    def run(self):
        for node in self.graph.node:
            handler = getattr(self, f"op_{node.op_type}", None)
            if node.domain not in ("", "ai.onnx") or handler is None:
                raise ConfigError(
                    f"ONNX operator {node.op_type!r} (node {node.name!r}) is not supported by "
                    f"volnet's importer; supported: {', '.join(sorted(supported_ops()))}")
            handler(node, attrs(node, self.onnx))
            self._track_rank(node)
        return self.nodes, self.layers

    # ---- operators ---------------------------------------------------------------
    def op_Constant(self, node, a):
        if "value" not in a:
            raise ConfigError(f"ONNX Constant {node.name!r}: only the 'value' form is supported")
        self.consts[node.output[0]] = a["value"]

    def op_Conv(self, node, a):
        w = self.const(node, 1)
        if w.ndim != 4:
            raise ConfigError(f"ONNX Conv {node.name!r}: only 2-D convolution is supported "
                              f"(weight shape {w.shape})")
        group = a.get("group", 1)
        layer = Conv2d(w.shape[1] * group, w.shape[0], w.shape[2:], stride=pair(a, "strides"),
                       padding=pads(node, a), dilation=pair(a, "dilations"), groups=group,
                       bias=len(node.input) > 2 and node.input[2] != "")
        layer.params["weight"][...] = w
        if "bias" in layer.params:
            layer.params["bias"][...] = self.const(node, 2)
        self.add_layer(node, layer, 1)

    def op_ConvTranspose(self, node, a):
        w = self.const(node, 1)
        if w.ndim != 4 or "output_shape" in a:
            raise ConfigError(f"ONNX ConvTranspose {node.name!r}: only 2-D transposed convolution "
                              "with pads and output_padding (no output_shape) is supported "
                              f"(weight shape {w.shape})")
        group = a.get("group", 1)
        layer = ConvTranspose2d(w.shape[0], w.shape[1] * group, w.shape[2:], pair(a, "strides"),
                                pads(node, a), tuple(a.get("output_padding", [0, 0])), group,
                                len(node.input) > 2 and node.input[2] != "",
                                pair(a, "dilations"))
        layer.params["weight"][...] = w
        if "bias" in layer.params:
            layer.params["bias"][...] = self.const(node, 2)
        self.add_layer(node, layer, 1)

    def op_Resize(self, node, a):
        mode = {"nearest": "nearest", "linear": "bilinear"}.get(a.get("mode", "nearest"))
        wanted = {"nearest": ("asymmetric", "floor"), "bilinear": ("pytorch_half_pixel", None)}
        coord = a.get("coordinate_transformation_mode", "half_pixel")
        if mode is None or coord not in (wanted[mode][0], "half_pixel" if mode == "bilinear" else "") \
                or (mode == "nearest" and a.get("nearest_mode", "round_prefer_floor") != "floor"):
            raise ConfigError(f"ONNX Resize {node.name!r}: only PyTorch's nearest (asymmetric, floor) "
                              "and bilinear (align_corners=False) resizing are supported, got "
                              f"mode={a.get('mode')}, coordinate_transformation_mode={coord}")
        given = [i for i in (2, 3) if i < len(node.input) and node.input[i] != ""]
        value = [float(v) for v in self.const(node, given[0]).reshape(-1)]
        if len(value) != 4 or value[:2] != [1.0, 1.0]:
            raise ConfigError(f"ONNX Resize {node.name!r}: only H and W may be resized, got {value}")
        if given[0] == 2:
            layer = Upsample(scale_factor=tuple(value[2:]), mode=mode)
        else:
            layer = Upsample(size=tuple(int(v) for v in value[2:]), mode=mode)
        self.add_layer(node, layer, None)

    def op_Gemm(self, node, a):
        if a.get("transA", 0):
            raise ConfigError(f"ONNX Gemm {node.name!r}: transA=1 is not supported")
        w = self.const(node, 1) * a.get("alpha", 1.0)
        w = w if a.get("transB", 0) else w.T
        has_bias = len(node.input) > 2 and node.input[2] != ""
        layer = Linear(w.shape[1], w.shape[0], bias=has_bias)
        layer.params["weight"][...] = w
        if has_bias:
            layer.params["bias"][...] = np.broadcast_to(
                self.const(node, 2) * a.get("beta", 1.0), (w.shape[0],))
        self.add_layer(node, layer, 1)

    def op_MatMul(self, node, a):
        w = self.const(node, 1)
        if w.ndim != 2:
            raise ConfigError(f"ONNX MatMul {node.name!r}: the weight must be 2-D, got {w.shape}")
        layer = Linear(w.shape[0], w.shape[1], bias=False)
        layer.params["weight"][...] = w.T
        self.add_layer(node, layer, 1)

    def op_Add(self, node, a):
        const = [i for i, t in enumerate(node.input) if t in self.consts]
        if not const:
            self.nodes.append(Node("add", node.name or f"add_{len(self.nodes)}",
                                   tuple(self.name(t) for t in node.input), node.output[0]))
            return
        # MatMul + Add(bias): fold the constant into the Linear layer MatMul made; a
        # per-channel constant elsewhere is a ChannelAffine shift (merged into a Mul's).
        index = node.input[const[0]]
        other = node.input[1 - const[0]]
        layer = self.layers.get(self.producer.get(other, ""))
        bias = self.consts[index]
        self.used_consts.add(index)
        if isinstance(layer, Linear) and "bias" not in layer.params and bias.size == layer.out_features:
            layer.params["bias"] = bias.reshape(-1).astype(layer.params["weight"].dtype)
            layer.grads.pop("bias", None)
            self.alias[node.output[0]] = self.name(other)
        elif isinstance(layer, ChannelAffine) and not any(layer.shift):
            layer.shift = tuple(float(v) for v in per_channel(node, bias, len(layer.scale)))
            self.alias[node.output[0]] = self.name(other)
        else:
            shift = per_channel(node, bias, None)
            self.add_layer(node, ChannelAffine([1.0] * len(shift), shift), source=other)

    def op_Mul(self, node, a):
        const = [i for i, t in enumerate(node.input) if t in self.consts]
        if len(const) != 1:
            raise ConfigError(f"ONNX Mul {node.name!r}: only multiplication by a per-channel "
                              "constant is supported")
        self.used_consts.add(node.input[const[0]])
        scale = per_channel(node, self.consts[node.input[const[0]]], None)
        self.add_layer(node, ChannelAffine(scale, [0.0] * len(scale)),
                       source=node.input[1 - const[0]])

    def op_Concat(self, node, a):
        rank = self.ranks.get(self.name(node.input[0]), 4)
        if a.get("axis") not in (1, 1 - rank):
            raise ConfigError(f"ONNX Concat {node.name!r}: only the channel axis 1 is supported, "
                              f"got axis={a.get('axis')}")
        self.nodes.append(Node("concat", node.name or f"concat_{len(self.nodes)}",
                               tuple(self.name(t) for t in node.input), node.output[0]))

    def op_MaxPool(self, node, a):
        if len(node.output) > 1 and node.output[1]:
            raise ConfigError(f"ONNX MaxPool {node.name!r}: the Indices output is not supported")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise ConfigError(f"ONNX MaxPool {node.name!r}: dilated pooling is not supported")
        self.add_layer(node, MaxPool2d(pair(a, "kernel_shape"), pair(a, "strides"), pads(node, a),
                                       ceil_mode=bool(a.get("ceil_mode", 0))))

    def op_AveragePool(self, node, a):
        self.add_layer(node, AvgPool2d(pair(a, "kernel_shape"), pair(a, "strides"), pads(node, a),
                                       ceil_mode=bool(a.get("ceil_mode", 0)),
                                       count_include_pad=bool(a.get("count_include_pad", 0))))

    def op_BatchNormalization(self, node, a):
        if a.get("training_mode", 0):
            raise ConfigError(f"ONNX BatchNormalization {node.name!r}: training_mode=1 is not supported")
        scale = self.const(node, 1)
        rank = self.ranks.get(self.name(node.input[0]), 4)
        layer = (BatchNorm2d if rank == 4 else BatchNorm1d)(scale.size, eps=a.get("epsilon", 1e-5))
        for i, key in enumerate(("weight", "bias", "running_mean", "running_var"), start=1):
            (layer.params if i < 3 else layer.buffers)[key][...] = self.const(node, i)
        self.add_layer(node, layer, 1)

    def op_LRN(self, node, a):
        if a["size"] % 2 == 0:
            raise ConfigError(f"ONNX LRN {node.name!r}: even size {a['size']} centres its window "
                              "differently from volnet's LocalResponseNorm; only odd sizes import")
        self.add_layer(node, LocalResponseNorm(a["size"], a.get("alpha", 1e-4), a.get("beta", 0.75),
                                               a.get("bias", 1.0)))

    def op_Flatten(self, node, a):
        if a.get("axis", 1) != 1:
            raise ConfigError(f"ONNX Flatten {node.name!r}: only axis=1 is supported")
        self.add_layer(node, Flatten())

    def op_Reshape(self, node, a):
        shape = [int(d) for d in self.const(node, 1)]
        if not shape or shape[0] not in (0, -1) or (shape[0] == -1 and -1 in shape[1:]):
            raise ConfigError(f"ONNX Reshape {node.name!r}: target {shape} must keep the batch "
                              "axis (first entry 0 or -1)")
        if 0 in shape[1:]:
            raise ConfigError(f"ONNX Reshape {node.name!r}: 0 ('copy') is supported only for "
                              "the batch axis")
        self.add_layer(node, Flatten() if len(shape) == 2 and shape[1] == -1 else Reshape(shape[1:]))

    def op_Expand(self, node, a):
        # Valid ONNX broadcasting over (N, C, 1, 1) or (N, C, H, W) to [1, 1, H, W] is exactly
        # what AdaptiveAvgPool2d((H, W)) computes (volnet exports it this way from 1x1).
        shape = [int(d) for d in self.const(node, 1)]
        if len(shape) != 4 or shape[:2] != [1, 1] or min(shape[2:]) < 1:
            raise ConfigError(f"ONNX Expand {node.name!r}: only spatial broadcasting to "
                              f"[1, 1, H, W] is supported, got {shape}")
        self.add_layer(node, AdaptiveAvgPool2d(tuple(shape[2:])))

    def op_Softmax(self, node, a):
        default = -1 if self.opset >= 13 else 1
        rank = self.ranks.get(self.name(node.input[0]), 2)
        axis = a.get("axis", default)
        if self.opset < 13 and rank != 2:
            raise ConfigError(f"ONNX Softmax {node.name!r}: opset {self.opset} flattens inputs; "
                              "only 2-D inputs are supported there")
        self.add_layer(node, Softmax(axis if axis > 0 else axis + rank))

    def op_LeakyRelu(self, node, a):
        self.add_layer(node, LeakyReLU(a.get("alpha", 0.01)))

    def __getattr__(self, name):
        if name.startswith("op_") and name[3:] in SIMPLE:
            return lambda node, a: self.add_layer(node, SIMPLE[name[3:]]())
        raise AttributeError(name)


def supported_ops() -> set[str]:
    """Names of the ONNX operators :func:`load_onnx` understands."""
    return set(SIMPLE) | {n[3:] for n in vars(_Importer) if n.startswith("op_")}


def load_onnx(path) -> Graph:
    """Read an ONNX file into a volnet :class:`Graph` (float32, inference and training ready).

    Args:
        path: An ``.onnx`` file with one input (N, C, H, W) or (N, features) and one output.

    Returns:
        A Graph; ``graph.input_shape`` holds the per-example input shape when the file fixes it.

    Raises:
        ConfigError: an unsupported operator or attribute, named in the message.
        CheckpointError: the file is missing or not a valid ONNX model.
        MissingDependencyError: the optional ``onnx`` package is not installed.
    """
    onnx = require("onnx", "onnx", "ONNX import")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        onnx.checker.check_model(path)   # from the file: no second copy of the weights
        model = onnx.load(path)
    except Exception as err:  # noqa: BLE001 - onnx raises many types for a damaged file
        raise CheckpointError(f"{path} is not a valid ONNX model ({type(err).__name__}: "
                              f"{str(err)[:200]})") from None
    importer = _Importer(model, onnx)
    inputs = [v for v in model.graph.input if v.name not in importer.consts]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ConfigError(f"{path}: volnet imports graphs with exactly one input and one output, "
                          f"found {len(inputs)} inputs and {len(model.graph.output)} outputs")
    nodes, layers = importer.run()
    out = importer.name(model.graph.output[0].name)
    graph = Graph(layers, nodes, inputs[0].name, out)
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    graph.input_shape = (tuple(d.dim_value for d in dims)
                         if dims and all(d.HasField("dim_value") for d in dims) else None)
    return graph
