"""Graph: a network given as a list of nodes over named tensors (what an ONNX file describes).

Most volnet networks nest ``Sequential``/``Residual``/``Concat``; an imported
ONNX model is an arbitrary directed acyclic graph. ``Graph`` runs such a
graph: each node is a volnet layer applied to one named tensor (or, for a
:class:`~volnet.layers.multi_input.MultiInputLayer` such as a broadcasting
``BinaryOp``, to several), or an elementwise ``add`` of equal shapes / a channel
``concat`` of several. It is a container, so
state dicts, ``freeze``, head replacement (``graph["fc"] = Linear(...)``) and
training all work on imported models. Backward walks the nodes in reverse
and sums the gradients of tensors that feed several nodes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer
from volnet.layers.containers import Container


class Node(NamedTuple):
    """One step of a :class:`Graph` (a tuple, so architecture JSON can store it).

    Args:
        kind: ``"layer"`` (apply the child layer called ``name``), ``"add"`` or ``"concat"``.
        name: Unique node name; for layers, the child's name (its state-dict prefix).
        inputs: Names of the tensors consumed (one for a layer; a multi-input layer's
            ``arity``).
        output: Name of the tensor produced.
    """

    kind: str
    name: str
    inputs: tuple[str, ...]
    output: str


class Graph(Container):
    """Layers wired by tensor names; runs nodes in the (topological) order given.

    Args:
        layers: ``{name: layer}`` for every ``"layer"`` node.
        nodes: The nodes in an order where every input is produced before use.
        input_name: Name of the graph's input tensor.
        output_name: Name of the tensor the graph returns.

    Example:
        >>> from volnet.layers import Conv2d, ReLU
        >>> g = Graph({"conv": Conv2d(3, 4, 3, padding=1), "relu": ReLU()},
        ...           [Node("layer", "conv", ("x",), "a"), Node("layer", "relu", ("a",), "b"),
        ...            Node("add", "skip", ("a", "b"), "y")], "x", "y")
        >>> g.output_shape((3, 8, 8))
        (4, 8, 8)
    """

    def __init__(self, layers, nodes: list[Node], input_name: str, output_name: str) -> None:
        pairs = layers.items() if isinstance(layers, dict) else layers   # dict or (name, layer)s
        super().__init__(OrderedDict((str(name), layer) for name, layer in pairs))
        self.nodes = [Node(kind, name, tuple(inputs), output)
                      for kind, name, inputs, output in nodes]
        self.input_name, self.output_name = input_name, output_name
        self._check_wiring()

    def _check_wiring(self) -> None:
        known = {self.input_name}
        for node in self.nodes:
            missing = [name for name in node.inputs if name not in known]
            if missing:
                raise ConfigError(f"Graph node {node.name!r} reads {missing} before they are "
                                  "produced; nodes must be in topological order")
            if node.kind == "layer" and (node.name not in self._children or len(node.inputs)
                                         != getattr(self._children[node.name], "arity", 1)):
                raise ConfigError(f"Graph node {node.name!r} needs a layer of that name and as "
                                  "many inputs as the layer takes")
            if node.kind not in ("layer", "add", "concat"):
                raise ConfigError(f"Graph node {node.name!r} has unknown kind {node.kind!r}")
            known.add(node.output)
        if self.output_name not in known:
            raise ConfigError(f"Graph output {self.output_name!r} is never produced")

    def output_shape(self, input_shape):
        shapes = {self.input_name: tuple(input_shape)}
        for node in self.nodes:
            ins = [shapes[name] for name in node.inputs]
            if node.kind == "layer":
                shapes[node.output] = self._children[node.name].output_shape(
                    ins[0] if len(ins) == 1 else tuple(ins))
            elif node.kind == "add":
                if len(set(ins)) != 1:
                    raise ShapeError(f"{self.where()}: add {node.name!r} gets shapes {ins}")
                shapes[node.output] = ins[0]
            else:
                if len({s[1:] for s in ins}) != 1:
                    raise ShapeError(f"{self.where()}: concat {node.name!r} gets shapes {ins}")
                shapes[node.output] = (sum(s[0] for s in ins),) + ins[0][1:]
        return shapes[self.output_name]

    def _last_uses(self) -> dict[str, int]:
        last = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = i
        return last

    def _forward(self, x, training, keep_cache):
        values, splits = {self.input_name: x}, {}
        last = self._last_uses()
        for i, node in enumerate(self.nodes):
            ins = [values[name] for name in node.inputs]
            if node.kind == "layer":
                out = self._children[node.name].forward(ins[0] if len(ins) == 1 else tuple(ins),
                                                        training, cache=keep_cache)
            elif node.kind == "add":
                if len({a.shape for a in ins}) != 1:
                    raise ShapeError(f"{self.where()}: add {node.name!r} gets shapes "
                                     f"{[a.shape for a in ins]}")
                out = sum(ins[1:], ins[0])
            else:
                splits[node.name] = np.cumsum([a.shape[1] for a in ins])[:-1]
                out = np.concatenate(ins, axis=1)
            values[node.output] = out
            for name in node.inputs:   # free intermediates no later node reads
                if last[name] == i and name != self.output_name:
                    values.pop(name, None)
        self._cache = splits if keep_cache else None
        return values[self.output_name]

    def _backward(self, dout):
        grads = {self.output_name: dout}
        for node in reversed(self.nodes):
            g = grads.pop(node.output, None)
            if g is None:      # an output nothing downstream used
                continue
            if node.kind == "layer":
                dx = self._children[node.name].backward(g)
                pieces = [dx] if len(node.inputs) == 1 else list(dx)
            elif node.kind == "add":
                pieces = [g] * len(node.inputs)
            else:
                pieces = [np.ascontiguousarray(p) for p in np.split(g, self._cache[node.name], axis=1)]
            for name, piece in zip(node.inputs, pieces):
                grads[name] = grads[name] + piece if name in grads else piece
        return grads[self.input_name]

    @property
    def layers(self) -> list[tuple[str, Layer]]:
        """(name, layer) of every layer node, current (after any head replacement)."""
        return list(self._children.items())

    def __setitem__(self, key, layer: Layer) -> None:
        """Replace a layer node by name, e.g. a new classifier head."""
        if not isinstance(key, str):
            raise ConfigError("Graph children are replaced by name, e.g. graph['fc'] = Linear(...)")
        super().__setitem__(key, layer)

    def extra_repr(self):
        return f"{len(self.nodes)} nodes, input={self.input_name!r}, output={self.output_name!r}"
