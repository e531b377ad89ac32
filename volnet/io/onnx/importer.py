"""Build a volnet network from an ONNX graph: CNN inference graphs at opsets 7 to 21.

The importer walks the nodes once, in order. A node whose inputs are all known constants
(``Constant``, ``Shape`` of a tensor of known shape, ``Gather``, ``Unsqueeze``, ``Concat``...)
is folded with NumPy (:mod:`volnet.io.onnx.fold`) before any layer reads it; every other
node becomes a volnet layer, or an ``add``/``concat`` node of a :class:`Graph`, through one
handler per operator (:data:`~volnet.io.onnx.registry.HANDLERS`, filled by the ``ops*``
modules of this package; add one with :func:`~volnet.io.onnx.registry.handles`). Every tensor's per-example
shape is known while importing, so each handler checks what it builds. A refusal names the
node, the operator, the attribute and what would work. ``onnx`` is imported only when called.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

# importing the handler modules registers them (layers with weights, activations, tensors...)
import volnet.io.onnx.ops
import volnet.io.onnx.ops_activations
import volnet.io.onnx.ops_math
import volnet.io.onnx.ops_slicing
import volnet.io.onnx.ops_tensor
import volnet.io.onnx.ops_upsampling  # noqa: F401
from volnet.errors import CheckpointError, ConfigError, VolnetError
from volnet.init import shapes_only
from volnet.io._optional import require
from volnet.io.onnx.attributes import attrs, nshape, refuse, scope_path
from volnet.io.onnx.budget import Budget, fold_size
from volnet.io.onnx.fold import fold
from volnet.io.onnx.fuse import fuse_activations, fuse_channel_shuffle
from volnet.io.onnx.metadata import read_preprocessing
from volnet.io.onnx.registry import FOLDERS, HANDLERS, OPSETS
from volnet.layers.graph import Graph, Node
from volnet.limits import check_budget


class Importer:
    """The state of one import: constants, per-example shapes, layers and Graph nodes."""

    def __init__(self, model, onnx, input_shape=None, max_bytes=None, base_dir=None) -> None:
        self.onnx, self.graph = onnx, model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.budget = Budget(max_bytes)
        self.consts = {t.name: self._initializer(t, base_dir) for t in self.graph.initializer}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.layers, self.nodes, self.alias, self.producer = {}, [], {}, {}
        self.taken: set[str] = set()        # layer and node names handed out
        self.unavailable: dict[str, str] = {}   # declared outputs volnet does not compute
        self.notes: list[str] = []
        self.from_shape: set[str] = set()   # constants computed from a Shape node
        self.input = self._input(input_shape)

    def _initializer(self, tensor, base_dir):
        from onnx import numpy_helper

        self.budget.initializer(tensor)
        try:
            return numpy_helper.to_array(tensor, base_dir or "")
        except Exception as err:  # noqa: BLE001 - onnx raises many types for damaged tensor data
            raise CheckpointError(f"initializer {tensor.name!r} cannot be read "
                                  f"({type(err).__name__}: {str(err)[:160]}); the file or its "
                                  "external data is damaged") from None

    def _input(self, input_shape):
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        if len(inputs) != 1 or len(self.graph.output) != 1:
            raise ConfigError(f"volnet imports graphs with exactly one input and one output, "
                              f"found {len(inputs)} inputs and {len(self.graph.output)} outputs; "
                              "bind the others to constants (as initializers) first")
        value = inputs[0]
        if not value.type.HasField("tensor_type"):
            raise ConfigError(f"graph input {value.name!r} is a {value.type.WhichOneof('value')}, "
                              "not a tensor; volnet imports networks over tensors")
        tensor = value.type.tensor_type
        if tensor.elem_type not in (1, 10, 11):   # float, float16, double
            kind = self.onnx.TensorProto.DataType.Name(tensor.elem_type)
            raise ConfigError(f"graph input {value.name!r} has element type {kind}; volnet "
                              "computes in floating point (float32/float64)")
        dims = list(tensor.shape.dim) if tensor.HasField("shape") else []
        batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
        self.batch = batch or 1            # the batch size Shape folds to
        self.fixed_batch = batch
        known = tuple(d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:])
        shape = tuple(input_shape) if input_shape is not None else known
        if not dims or (input_shape is None and 0 in known):
            raise ConfigError(f"graph input {value.name!r} has shape "
                              f"{['N'] + [d or '?' for d in known]}: its per-example sizes must be "
                              "known; pass load_onnx(path, input_shape=(C, H, W))")
        self.budget.check_input(value.name, shape)
        self.shapes[value.name] = tuple(int(d) for d in shape)
        return value.name

    # ---- what handlers use ------------------------------------------------------------
    def name(self, tensor: str) -> str:
        return self.alias.get(tensor, tensor)

    def is_const(self, tensor: str) -> bool:
        return tensor in self.consts

    def shape(self, tensor: str) -> tuple[int, ...]:
        """Per-example shape of a computed tensor (the batch axis excluded)."""
        return self.shapes[self.name(tensor)]

    def const(self, node, index: int, what: str, optional: bool = False):
        """Input ``index`` of ``node`` as a NumPy array; it must be a constant."""
        if index >= len(node.input) or node.input[index] == "":
            if optional:
                return None
            raise refuse(node, what, f"input {index} is missing", "give it as a constant")
        if node.input[index] not in self.consts:
            raise refuse(node, what, f"input {index} ({node.input[index]!r}) is computed from "
                         "the graph input", "volnet needs it as a constant (an initializer)")
        return self.consts[node.input[index]]

    def computed(self, node, index: int = 0) -> str:
        """Input ``index`` as a computed tensor's (aliased) name; a constant is refused."""
        tensor = node.input[index]
        if tensor in self.consts:
            raise refuse(node, f"input {index}", f"{tensor!r} is a constant where volnet "
                         "expects the tensor computed from the graph input",
                         "fold the constant into the weights before exporting")
        return self.name(tensor)

    def add_layer(self, node, layer, source=None, weight_index=None,
                  output: str | None = None) -> str:
        """Append ``layer`` reading ``source`` (default: input 0; a tuple of names for a
        multi-input layer); returns the output name."""
        sources = tuple(self.name(t) for t in source) if isinstance(source, tuple) \
            else (self.name(source or node.input[0]),)
        output = output or node.output[0]
        name = self._child_name(node, weight_index)
        shapes = [self.shapes[t] for t in sources]
        try:
            shape = layer.output_shape(shapes[0] if len(shapes) == 1 else tuple(shapes))
        except VolnetError as err:
            raise refuse(node, "", f"{type(layer).__name__} cannot take input of shape "
                         f"{', '.join(nshape(s) for s in shapes)}: {err}", "volnet keeps axis 0 "
                         "as the batch axis and computes each example alone") from None
        self.budget.check_shape(node, shape)
        layer._set_path(name)
        self.layers[name] = layer
        self.nodes.append(Node("layer", name, sources, output))
        self.producer[output], self.shapes[output] = name, shape
        return output

    def add_join(self, node, kind: str, sources, shape, output: str | None = None) -> None:
        """An ``add`` or ``concat`` Graph node over computed tensors."""
        name = self.unique(node.name or f"{kind}_{len(self.nodes)}")
        output = output or node.output[0]
        self.budget.check_shape(node, shape)
        self.nodes.append(Node(kind, name, tuple(sources), output))
        self.shapes[output] = shape

    def note(self, node, text: str) -> None:
        self.notes.append(f"ONNX node {node.name or node.output[0]!r} ({node.op_type}): {text}")

    def unique(self, base: str) -> str:
        """A layer or node name not handed out before (kept in a set: linear in depth)."""
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def _child_name(self, node, weight_index) -> str:
        base = ""
        if weight_index is not None and weight_index < len(node.input):
            base = re.sub(r"\.(weight|bias|W|w)$", "", node.input[weight_index])
            if base == node.input[weight_index]:
                base = ""
        if not base or base in self.taken:
            base = scope_path(node.name) or node.name or f"{node.op_type.lower()}_{len(self.nodes)}"
        base = base.replace("/", ".").strip(".") or node.op_type.lower()
        return self.unique(base)

    # ---- the walk ---------------------------------------------------------------------
    def run(self) -> Graph:
        if self.opset not in OPSETS:
            raise ConfigError(f"the model uses ONNX opset {self.opset}; volnet imports opsets "
                              f"{OPSETS.start} to {OPSETS.stop - 1}")
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise refuse(node, "domain", f"operator {node.domain}.{node.op_type} is outside "
                             "the standard ONNX domain", f"supported: {', '.join(supported_ops())}")
            a = attrs(node, self.onnx)
            unread = [t for t in node.input if t in self.unavailable]
            if unread:
                raise refuse(node, "input", f"{unread[0]!r} is {self.unavailable[unread[0]]}, "
                             "which volnet does not compute", "read only the main output")
            if not self._try_fold(node, a):
                handler = HANDLERS.get(node.op_type)
                if handler is None:
                    raise ConfigError(
                        f"ONNX operator {node.op_type!r} (node {node.name!r}) is not supported by "
                        f"volnet's importer; supported: {', '.join(supported_ops())}")
                handler(self, node, a)
        fuse_channel_shuffle(self)
        fuse_activations(self)
        if self.fixed_batch:
            # every node that would mix examples (a Reshape, Flatten, Transpose, Concat,
            # Softmax, reduction or broadcast across axis 0) was refused above, naming it
            self.notes.insert(0, f"graph input {self.input!r} fixes the batch to "
                              f"{self.fixed_batch}; no node depends on it, so volnet reads it "
                              "as a free batch axis (any N)")
        out = self.graph.output[0].name
        if out in self.unavailable:
            raise ConfigError(f"graph output {out!r} is {self.unavailable[out]}, which volnet "
                              "does not compute; export the network's main output")
        if out in self.consts:
            raise ConfigError(f"graph output {out!r} is a constant (it does not depend on the "
                              "input); volnet imports networks that compute from their input")
        graph = Graph(self.layers, self.nodes, self.input, self.name(out))
        graph.input_shape = self.shapes[self.input]
        graph.import_notes = list(self.notes)
        return graph

    def _try_fold(self, node, a) -> bool:
        if node.op_type == "Shape" and node.input[0] not in self.consts:
            full = np.array((self.batch, *self.shape(node.input[0])), dtype=np.int64)
            self.consts[node.output[0]] = full[a.get("start", 0):a.get("end", None)]
            self.from_shape.add(node.output[0])
            return True
        present = [t for t in node.input if t]
        if node.op_type not in FOLDERS or not all(t in self.consts for t in present):
            return False
        inputs = [self.consts[t] if t else None for t in node.input]
        self.budget.folded(node, *fold_size(node, a, inputs))
        outputs = fold(node, a, inputs, self.opset)
        derived = any(t in self.from_shape for t in present)
        for tensor, value in zip(node.output, outputs):
            if tensor:
                self.consts[tensor] = np.asarray(value)
                if derived:
                    self.from_shape.add(tensor)
        return True


def supported_ops() -> list[str]:
    """Names of the ONNX operators :func:`load_onnx` understands (layers and folded ones)."""
    return sorted(set(HANDLERS) | set(FOLDERS))


def _check_text(model, where: str) -> None:
    """Every name the importer reads is text: protobuf hands undecodable strings over as bytes."""
    graph = model.graph
    texts = [graph.name] + [v.name for v in (*graph.input, *graph.output, *graph.initializer)]
    for node in graph.node:
        texts += [node.name, node.op_type, node.domain, *node.input, *node.output]
        texts += [a.name for a in node.attribute]
    texts += [p.key for p in model.metadata_props] + [p.value for p in model.metadata_props]
    if any(not isinstance(t, str) for t in texts):
        raise CheckpointError(f"{where} is not a valid ONNX model: a name or string field is "
                              "not UTF-8 text")


def _read_model(path, onnx, limit):
    if isinstance(path, onnx.ModelProto):
        try:
            onnx.checker.check_model(path)
        except Exception as err:  # noqa: BLE001 - onnx raises many types for a damaged model
            raise CheckpointError(f"not a valid ONNX model ({type(err).__name__}: "
                                  f"{str(err)[:200]})") from None
        _check_text(path, "the model")
        return path
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    check_budget(os.path.getsize(path), f"{path}: the file itself", limit, CheckpointError)
    try:
        # the file is read once: the checker parses these bytes in C++ (then frees its copy)
        # and Python parses them again; reading the path in each took twice the disk time
        # (ResNet-50, 100 MB: 0.19 -> 0.09 s). External data is read per initializer, after
        # the budget has seen its declared size.
        with open(path, "rb") as f:
            data = f.read()
        model = onnx.load_model_from_string(data)
        external = any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in model.graph.initializer)
        # external data files are checked next to the model only when given its path
        onnx.checker.check_model(path if external else data)
        del data
    except Exception as err:  # noqa: BLE001 - onnx raises many types for a damaged file
        raise CheckpointError(f"{path} is not a valid ONNX model ({type(err).__name__}: "
                              f"{str(err)[:200]})") from None
    _check_text(model, path)
    return model


def load_onnx(path, input_shape=None, max_bytes=None) -> Graph:
    """Read an ONNX file into a volnet :class:`Graph` (float32, inference and training ready).

    Args:
        path: An ``.onnx`` file (or an ``onnx.ModelProto``) with one input and one output.
        input_shape: Per-example input shape, needed when the file leaves C/H/W symbolic.
        max_bytes: Memory budget for what the file materialises (constants, folded values,
            one example's activations); default :func:`volnet.limits.max_bytes`.

    Returns:
        A Graph with ``input_shape``, ``preprocessing`` (what the exporter recorded:
        input shape, mean, std, class names) and ``import_notes`` (how ambiguous nodes
        were read, e.g. a Reshape to a fixed batch of 1; also issued as one warning).

    Raises:
        ConfigError: an unsupported operator or attribute, named in the message.
        CheckpointError: the file is missing or not a valid ONNX model, or what it declares
            exceeds the memory budget (also a :class:`~volnet.errors.BudgetError`).
        MissingDependencyError: the optional ``onnx`` package is not installed.
    """
    onnx = require("onnx", "onnx", "ONNX import")
    model = _read_model(path, onnx, max_bytes)
    base_dir = None if isinstance(path, onnx.ModelProto) else os.path.dirname(os.path.abspath(path))
    with shapes_only():     # every weight is then written from the file: drawing them first
        graph = Importer(model, onnx, input_shape, max_bytes, base_dir).run()   # took 55%
    graph.preprocessing = read_preprocessing(model)
    graph.preprocessing.setdefault("input_shape", list(graph.input_shape))
    if graph.import_notes:
        warnings.warn("volnet read these ONNX nodes as follows:\n  "
                      + "\n  ".join(graph.import_notes), stacklevel=2)
    return graph
