"""Graph rewrites after import: ShuffleNet's Reshape -> Transpose -> Reshape becomes one
ChannelShuffle layer (the channel split into groups, the group axes swapped, merged back)."""

from __future__ import annotations

from volnet.io.onnx_graph import Reshape
from volnet.layers import ChannelShuffle, Transpose


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
        name = imp._unique(merge.name.rsplit(".", 1)[0] + ".channel_shuffle"
                           if "." in merge.name else "channel_shuffle")
        shuffle = ChannelShuffle(groups)
        shuffle._set_path(name)
        layers[name] = shuffle
        nodes[i:i + 3] = [type(split)("layer", name, split.inputs, merge.output)]
        i += 1
