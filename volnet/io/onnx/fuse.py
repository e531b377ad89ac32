"""Graph rewrites after import: ShuffleNet's Reshape -> Transpose -> Reshape becomes one
ChannelShuffle layer (the channel split into groups, the group axes swapped, merged back),
and ``x * Sigmoid(x)`` / ``x * HardSigmoid(x)`` become one SiLU / HardSwish layer."""

from __future__ import annotations

from volnet.layers import (
    BinaryOp,
    ChannelShuffle,
    HardSigmoid,
    HardSwish,
    Reshape,
    Sigmoid,
    SiLU,
    Transpose,
)


def _consumers(nodes) -> dict[str, int]:
    count: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            count[name] = count.get(name, 0) + 1
    return count


def fuse_channel_shuffle(imp) -> None:
    """Replace each (C, H, W) -> (g, C/g, H, W) -> swap -> (C, H, W) chain by ChannelShuffle(g)."""
    nodes, layers = imp.nodes, imp.layers
    uses = _consumers(nodes)
    uses[imp.name(imp.graph.output[0].name)] = uses.get(imp.name(imp.graph.output[0].name), 0) + 1
    i = 0
    while i + 2 < len(nodes):
        split, swap, merge = nodes[i:i + 3]
        kinds = [n.kind for n in (split, swap, merge)]
        chain = (kinds == ["layer"] * 3 and swap.inputs == (split.output,)
                 and merge.inputs == (swap.output,) and uses.get(split.output) == 1
                 and uses.get(swap.output) == 1)
        if chain:
            first, middle, last = layers[split.name], layers[swap.name], layers[merge.name]
            source = imp.shapes[split.inputs[0]]
            chain = (isinstance(first, Reshape) and isinstance(middle, Transpose)
                     and isinstance(last, Reshape) and len(source) == 3
                     and len(first.shape) == 4 and middle.dims == (1, 0, 2, 3)
                     and first.shape[2:] == source[1:] and last.shape == source
                     and first.shape[0] * first.shape[1] == source[0])
        if not chain:
            i += 1
            continue
        groups = first.shape[0]
        for node in (split, swap, merge):
            del layers[node.name]
        name = imp.unique(merge.name.rsplit(".", 1)[0] + ".channel_shuffle"
                           if "." in merge.name else "channel_shuffle")
        shuffle = ChannelShuffle(groups)
        shuffle._set_path(name)
        layers[name] = shuffle
        nodes[i:i + 3] = [type(split)("layer", name, split.inputs, merge.output)]
        i += 1


def _gate_fusion(gate):
    """The fused layer for ``x * gate(x)``, or None when ``gate`` is not one."""
    if type(gate) is Sigmoid:
        return SiLU()
    if type(gate) is HardSigmoid and abs(gate.alpha - 1 / 6) < 1e-6 and gate.beta == 0.5:
        return HardSwish()
    return None


def fuse_activations(imp) -> None:
    """Replace each ``Sigmoid(x) -> Mul(x, .)`` pair (EfficientNet's Swish, as PyTorch exports
    ``nn.SiLU``) by SiLU, and ``HardSigmoid(x) -> Mul(x, .)`` by HardSwish (opsets before 14),
    when nothing else reads the gate."""
    nodes, layers = imp.nodes, imp.layers
    uses = _consumers(nodes)
    final = imp.name(imp.graph.output[0].name)
    uses[final] = uses.get(final, 0) + 1
    made = {node.output: i for i, node in enumerate(nodes) if node.kind == "layer"}
    dead = set()
    for i, node in enumerate(nodes):
        if node.kind != "layer" or not isinstance(layers[node.name], BinaryOp) \
                or layers[node.name].op != "mul" or len(set(node.inputs)) != 2:
            continue
        for gate_out, x in (node.inputs, node.inputs[::-1]):
            j = made.get(gate_out)
            if j is None or j in dead or uses.get(gate_out) != 1:
                continue
            gate = nodes[j]
            fused = _gate_fusion(layers[gate.name])
            if fused is None or gate.inputs != (x,):
                continue
            del layers[node.name]
            fused._set_path(gate.name)
            layers[gate.name] = fused
            nodes[i] = type(node)("layer", gate.name, (x,), node.output)
            dead.add(j)
            break
    nodes[:] = [node for i, node in enumerate(nodes) if i not in dead]
