"""A network's architecture as JSON, and back: what lets ``volnet.load`` rebuild a net.

Every layer becomes ``{"type": "Conv2d", "module": "volnet.layers.conv", "args": {...}}``;
containers add ``"children": [[name, config], ...]`` so child names (and with
them state-dict keys) survive; Residual records ``body_name``,
``shortcut_name`` and its activation. Arguments are recovered from the
constructor's signature: each parameter is read from the attribute of the same
name (``kernel_size``, ``stride``...), with a few spelled-out exceptions
(``bias`` is whether the layer has a bias parameter). ``rng`` and ``dtype``
are not architecture: weights come from the checkpoint, dtype from them.

Rebuilding imports nothing outside ``volnet`` and only instantiates ``Layer``
subclasses, so a forged config cannot run arbitrary code.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re

import numpy as np

from volnet.errors import CheckpointError, ConfigError
from volnet.layers import Concat, Layer, Residual, Sequential
from volnet.limits import loads_json

_SKIP = {"self", "rng", "dtype", "seed"}
# Packages that define layers; importing anything else (volnet.__main__ runs the CLI) is refused.
_LAYER_MODULES = re.compile(r"volnet(\.(layers|models|io|tools|train)(\.[a-z][a-z0-9_]*)*)?")
FORMAT = 1
# layers that moved: checkpoints written before the move name the old module
MOVED = {("volnet.io.onnx_graph", "Graph"): "volnet.layers.graph",
         ("volnet.io.onnx_graph", "Reshape"): "volnet.layers.reshape"}


def _plain(value):
    """JSON-friendly copy of an attribute value (tuples -> lists, NumPy scalars -> Python)."""
    if isinstance(value, Layer):        # a layer passed to the constructor (e.g. a head)
        return {"__layer__": layer_config(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"cannot describe {value!r} ({type(value).__name__}) as JSON")


def _leaf_args(layer: Layer) -> dict:
    args = {}
    for name, param in inspect.signature(type(layer).__init__).parameters.items():
        if name in _SKIP or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "bias" and isinstance(param.default, bool):
            args[name] = "bias" in layer.params
        elif hasattr(layer, name):
            args[name] = _plain(getattr(layer, name))
        elif param.default is inspect.Parameter.empty:
            raise ConfigError(f"{layer.where()}: cannot recover constructor argument {name!r} "
                              f"of {type(layer).__name__} (no attribute of that name)")
    return args


def layer_config(layer: Layer) -> dict:
    """The JSON-serialisable description of ``layer`` and all its children."""
    config = {"type": type(layer).__name__, "module": type(layer).__module__}
    if isinstance(layer, Residual):
        names = {id(child): name for name, child in layer.named_children()}
        config["args"] = {"body_name": names[id(layer.body)],
                          "shortcut_name": names.get(id(layer.shortcut), "shortcut")}
        config["children"] = [[role, layer_config(child)] for role, child in
                              (("body", layer.body), ("shortcut", layer.shortcut),
                               ("activation", layer.activation)) if child is not None]
    elif isinstance(layer, (Sequential, Concat)):
        # the container's own child names (FlatConcat reports "" to splice keys)
        config["args"] = {}
        config["children"] = [[name, layer_config(child)] for name, child in layer._children.items()]
    else:
        config["args"] = _leaf_args(layer)
        if layer.named_children() and "__layer__" not in json.dumps(config["args"]):
            raise ConfigError(f"{layer.where()}: {type(layer).__name__} has children that are "
                              "not constructor arguments; architecture JSON cannot rebuild it")
    if layer.frozen:
        config["frozen"] = sorted(layer.frozen)
    return config


def _layer_class(config: dict) -> type:
    module_name, type_name = config.get("module", ""), config.get("type", "")
    if isinstance(module_name, str) and isinstance(type_name, str):
        module_name = MOVED.get((module_name, type_name), module_name)
    if not isinstance(module_name, str) or not _LAYER_MODULES.fullmatch(module_name):
        raise CheckpointError(f"architecture names module {module_name!r}; only volnet layers "
                              "can be rebuilt (modules under volnet.layers, volnet.models, "
                              "volnet.io, volnet.tools, volnet.train)")
    if not isinstance(type_name, str):
        raise CheckpointError(f"architecture names layer type {type_name!r}; expected a name")
    try:
        cls = getattr(importlib.import_module(module_name), type_name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"architecture names unknown layer {module_name}.{type_name}; "
                              "is this checkpoint from a newer volnet?") from None
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise CheckpointError(f"{module_name}.{type_name} is not a volnet Layer")
    return cls


def _unplain(value, dtype):
    if isinstance(value, dict) and set(value) == {"__layer__"}:
        return build_layer(value["__layer__"], dtype)
    if isinstance(value, list):
        return [_unplain(v, dtype) for v in value]
    return value


def _short(value, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _parts(config: dict) -> tuple[dict, list, list]:
    """(args, children, frozen) of a layer config, each checked to have the right form."""
    args, children = config.get("args") or {}, config.get("children", [])
    frozen = config.get("frozen", [])
    if not isinstance(args, dict):
        raise CheckpointError(f"architecture entry {config.get('type')}: args must be an object")
    if not (isinstance(children, list) and all(
            isinstance(c, list) and len(c) == 2 and isinstance(c[0], str) for c in children)):
        raise CheckpointError(f"architecture entry {config.get('type')}: children must be "
                              "[name, config] pairs")
    if not (isinstance(frozen, list) and all(isinstance(f, str) for f in frozen)):
        raise CheckpointError(f"architecture entry {config.get('type')}: frozen must list names")
    return args, children, frozen


def build_layer(config: dict, dtype=np.float32) -> Layer:
    """Rebuild a layer (with fresh weights) from :func:`layer_config` output.

    Any failure of a constructor on the recorded arguments is a CheckpointError:
    the JSON comes from a file and may be corrupt or forged.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"layer config must be an object, got {type(config).__name__}")
    cls = _layer_class(config)
    raw_args, raw_children, frozen = _parts(config)
    args = {k: _unplain(v, dtype) for k, v in raw_args.items()}
    children = [(name, build_layer(child, dtype)) for name, child in raw_children]
    try:
        if cls is Residual or issubclass(cls, Residual):
            roles = dict(children)
            layer = cls(roles["body"], roles.get("shortcut"), roles.get("activation"), **args)
        elif issubclass(cls, (Sequential, Concat)):
            layer = cls(dict(children)) if children else cls()
        else:
            if "dtype" in inspect.signature(cls.__init__).parameters:
                args["dtype"] = dtype
            layer = cls(**args)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - a constructor fed corrupt or forged arguments
        raise CheckpointError(f"cannot rebuild {config.get('type')} from {_short(args)}: "
                              f"{type(err).__name__}: {_short(err)}") from None
    layer.frozen |= set(frozen)
    return layer


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list) else (value, value)


def _own_size(config: dict) -> int:
    """Parameter and buffer elements one layer config allocates by itself (children apart)."""
    args, kind = config.get("args") or {}, config.get("type")
    try:
        if kind == "Conv2d":
            kh, kw = _pair(args["kernel_size"])
            bias = args["out_channels"] if args.get("bias", True) else 0
            return args["out_channels"] * (args["in_channels"] // max(args.get("groups", 1), 1)) \
                * kh * kw + bias
        if kind == "Linear":
            return (args["in_features"] + bool(args.get("bias", True))) * args["out_features"]
        if kind in ("BatchNorm1d", "BatchNorm2d"):
            return 4 * args["num_features"] + 1
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(f"architecture entry {kind} has malformed arguments "
                              f"{_short(args)}") from None
    return 0


def declared_layers(config) -> tuple[int, int]:
    """(elements, layers): the parameter and buffer elements that building ``config`` would
    allocate, and how many layer configs it holds, computed from the JSON alone.

    Every layer anywhere is counted: children, layers passed as arguments, and layers
    inside lists or dicts of arguments (a forged config can hide a ``Linear`` there).
    The walk uses an explicit stack, so no nesting depth can exhaust Python's.
    """
    elements = layers = 0
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("type"), str) and "module" in item:
                size = _own_size(item)
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise CheckpointError(f"architecture entry {item.get('type')} declares "
                                          f"{size!r} weights")
                elements += size
                layers += 1
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return elements, layers


def declared_size(config: dict) -> int:
    """Parameter and buffer elements the config's Conv2d, Linear and batch-norm layers will
    allocate, wherever they sit in it (so a forged config is caught before building)."""
    return declared_layers(config)[0]


def to_json(net: Layer) -> str:
    """``net``'s architecture as a JSON string (format version included).

    Example:
        >>> from volnet.models import lenet5
        >>> net = from_json(to_json(lenet5()))
        >>> net.output_shape((1, 28, 28))
        (10,)
    """
    return json.dumps({"format": FORMAT, "net": layer_config(net)}, separators=(",", ":"))


def from_json(text: str, dtype=np.float32) -> Layer:
    """Rebuild a network (fresh weights) from :func:`to_json` output."""
    doc = loads_json(text, "architecture JSON", CheckpointError) if isinstance(text, (str, bytes)) \
        else text
    if not isinstance(doc, dict) or "net" not in doc:
        raise CheckpointError("architecture JSON must be an object with a 'net' entry")
    if not isinstance(doc.get("format", 0), int) or doc.get("format", 0) > FORMAT:
        raise CheckpointError(f"architecture format {doc.get('format')} is newer than this "
                              f"volnet understands ({FORMAT}); upgrade volnet")
    net = build_layer(doc["net"], dtype)
    net._set_path("")
    return net
