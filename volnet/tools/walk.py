"""Walk a network with shapes alone: one record per layer, in execution order.

The summary and the receptive-field tool both read these records. Only
``output_shape`` and hyperparameters are used; no data runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from volnet.errors import ConfigError, ShapeError
from volnet.functional.conv import conv_output_size
from volnet.layers.base import Layer, join_key
from volnet.layers.containers import Concat, Residual, Sequential
from volnet.tools.fields import Field, join_fields, layer_field


@dataclass
class Record:
    """One step of the walk.

    ``kind`` is "input" (the input volume), "leaf" (a layer without children or
    a container walked as a whole), "join" (the sum of a Residual or the
    concatenation of a Concat) or "end" (the output of a container).
    """

    path: str
    layer: Layer | None
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    field: Field | None

    @property
    def is_input(self) -> bool:
        return self.kind == "input"


def check_input_shape(input_shape) -> tuple[int, ...]:
    """A per-example shape as a tuple of positive ints, or a ConfigError saying what to pass."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ConfigError(f"input_shape must be a per-example shape such as (3, 224, 224) "
                          f"(C, H, W, batch axis excluded) or (features,), got {input_shape!r}")
    return shape


def walk(net: Layer, input_shape, strict: bool = False) -> list[Record]:
    """Records for the input and every layer of ``net`` on a per-example ``input_shape``.

    With ``strict`` every window layer must tile its input exactly, (W - F + 2P)/S + 1
    an integer, or a ShapeError names the layer and shows the formula.
    """
    shape = check_input_shape(input_shape)
    field = Field() if len(shape) == 3 else None
    records = [Record("input", None, "input", shape, shape, field)]
    _walk(net, net.path, shape, field, strict, records)
    return records


def _walk(layer, path, shape, field, strict, out):
    """Append records for ``layer``; return its (output shape, field)."""
    if isinstance(layer, Sequential):
        for name, child in layer.named_children():
            shape, field = _walk(child, join_key(path, name), shape, field, strict, out)
        out.append(Record(path, layer, "end", out[-1].output_shape, shape, field))
        return shape, field
    if isinstance(layer, Residual):
        return _walk_residual(layer, path, shape, field, strict, out)
    if isinstance(layer, Concat):
        return _walk_concat(layer, path, shape, field, strict, out)
    if hasattr(layer, "nodes") and hasattr(layer, "input_name"):   # an imported ONNX Graph
        return _walk_graph(layer, path, shape, field, strict, out)
    if strict:
        _check_tiling(layer, path, shape)
    out_shape = tuple(layer.output_shape(shape))
    new_field = layer_field(layer, shape, out_shape, field) if not layer.named_children() else (
        field if out_shape[1:] == shape[1:] else None)
    out.append(Record(path, layer, "leaf", shape, out_shape, new_field))
    return out_shape, new_field


def _walk_residual(layer, path, shape, field, strict, out):
    names = {id(child): name for name, child in layer.named_children()}
    body_shape, body_field = _walk(layer.body, join_key(path, names[id(layer.body)]),
                                   shape, field, strict, out)
    short_shape, short_field = shape, field
    if layer.shortcut is not None:
        short_shape, short_field = _walk(layer.shortcut, join_key(path, names[id(layer.shortcut)]),
                                         shape, field, strict, out)
    if body_shape != short_shape:
        raise ShapeError(f"{layer.where()}: body gives {body_shape} but the shortcut gives "
                         f"{short_shape} for input {shape}; add a projection shortcut")
    joined = _join(layer, [body_field, short_field])
    out.append(Record(path, layer, "join", shape, body_shape, joined))
    if layer.activation is None:
        return body_shape, joined
    result = _walk(layer.activation, join_key(path, names[id(layer.activation)]),
                   body_shape, joined, strict, out)
    out.append(Record(path, layer, "end", shape, result[0], result[1]))
    return result


def _walk_concat(layer, path, shape, field, strict, out):
    results = [_walk(child, join_key(path, name), shape, field, strict, out)
               for name, child in layer.named_children()]
    spatial = {s[1:] for s, _ in results}
    if len(spatial) != 1:
        raise ShapeError(f"{layer.where()}: branches disagree on spatial size for input {shape}: "
                         + ", ".join(str(s) for s, _ in results))
    out_shape = (sum(s[0] for s, _ in results),) + results[0][0][1:]
    joined = _join(layer, [f for _, f in results])
    out.append(Record(path, layer, "join", shape, out_shape, joined))
    return out_shape, joined


def _walk_graph(layer, path, shape, field, strict, out):
    """Nodes in order: layers walked as usual, ``add``/``concat`` nodes as joins."""
    seen = {layer.input_name: (shape, field)}
    for node in layer.nodes:
        ins = [seen[name] for name in node.inputs]
        if node.kind == "layer" and len(ins) == 1:
            seen[node.output] = _walk(layer[node.name], join_key(path, node.name), *ins[0],
                                      strict, out)
            continue
        first = ins[0][0]
        if node.kind == "layer":      # a multi-input layer (a broadcasting BinaryOp): a join
            out_shape = tuple(layer[node.name].output_shape(tuple(s for s, _ in ins)))
        elif node.kind == "add":
            out_shape = first
        else:
            out_shape = (sum(s[0] for s, _ in ins),) + first[1:]
        joined = _join(layer, [f for _, f in ins])
        out.append(Record(join_key(path, node.name), layer, "join", first, out_shape, joined))
        seen[node.output] = (out_shape, joined)
    result = seen[layer.output_name]
    out.append(Record(path, layer, "end", shape, *result))
    return result


def _join(layer, fields):
    if any(f is None for f in fields):
        return None
    return join_fields(fields, layer.where())


def _check_tiling(layer, path, shape):
    """Raise where a window layer does not tile its input exactly (the lecture's rule)."""
    if len(shape) != 3 or not hasattr(layer, "kernel_size") or not hasattr(layer, "stride"):
        return
    what = f"{type(layer).__name__}({layer.extra_repr()}) at {path or 'the top'}"
    padding = getattr(layer, "padding", (0, 0))
    dilation = getattr(layer, "dilation", (1, 1))
    for i in range(2):
        conv_output_size(shape[1 + i], layer.kernel_size[i], layer.stride[i], padding[i],
                         dilation[i], strict=True, what=what)
