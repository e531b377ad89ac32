"""ONNX exporters of the containers: Sequential chains, Residual adds, Concat concatenates
along channels, a SideBranch exports its main path, a Graph its DAG."""

from __future__ import annotations

from volnet.io.onnx.registry import emit, register_onnx_exporter
from volnet.layers import Concat, Graph, Residual, Sequential
from volnet.layers.base import join_key
from volnet.layers.side_branch import SideBranch


# ---- containers -----------------------------------------------------------------
@register_onnx_exporter(Sequential)
def _sequential(layer, b, x, shape, prefix):
    for name, child in layer.named_children():
        x, shape = emit(child, b, x, shape, join_key(prefix, name))
    return x, shape


@register_onnx_exporter(Residual)
def _residual(layer, b, x, shape, prefix):
    names = {id(child): name for name, child in layer.named_children()}
    body, body_shape = emit(layer.body, b, x, shape, join_key(prefix, names[id(layer.body)]))
    short = x
    if layer.shortcut is not None:
        short, _ = emit(layer.shortcut, b, x, shape, join_key(prefix, names[id(layer.shortcut)]))
    out = b.node("Add", [body, short], prefix)
    if layer.activation is not None:
        return emit(layer.activation, b, out, body_shape, join_key(prefix, "activation"))
    return out, body_shape


@register_onnx_exporter(Concat)
def _concat(layer, b, x, shape, prefix):
    outs = [emit(child, b, x, shape, join_key(prefix, name))[0]
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
        if node.kind == "layer" and len(ins) > 1:      # a multi-input layer: lists in, one out
            out, out_shape = emit(layer[node.name], b, ins, [shapes[i] for i in node.inputs], path)
        elif node.kind == "layer":
            out, out_shape = emit(layer[node.name], b, ins[0], shapes[node.inputs[0]], path)
        elif node.kind == "add":
            out, out_shape = b.node("Add", ins, path), shapes[node.inputs[0]]
        else:
            out = b.node("Concat", ins, path, axis=1)
            first = shapes[node.inputs[0]]
            out_shape = (sum(shapes[i][0] for i in node.inputs),) + first[1:]
        names[node.output], shapes[node.output] = out, out_shape
    return names[layer.output_name], shapes[layer.output_name]
