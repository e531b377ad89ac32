"""ONNX operators that cut, pad or broadcast a computed tensor: Split and Slice (a Narrow
layer per piece), Pad (constant padding of H and W) and Expand (broadcasting)."""

from __future__ import annotations

import numpy as np

from volnet.io.onnx.attributes import nshape, refuse
from volnet.io.onnx.registry import handles
from volnet.layers import ConstantPad2d, Expand, Narrow


@handles("Pad")
def pad(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    if a.get("mode", "constant") != "constant":
        raise refuse(node, "mode", f"{a['mode']!r} padding is not supported",
                     "volnet imports constant padding")
    if imp.opset < 11:
        pads, value = list(a.get("pads", [])), a.get("value", 0.0)
    else:
        pads = [int(p) for p in imp.const(node, 1, "pads")]
        value = imp.const(node, 2, "constant_value", optional=True)
        value = 0.0 if value is None or np.size(value) == 0 else float(np.ravel(value)[0])
        axes = imp.const(node, 3, "axes", optional=True)
        if axes is not None:
            full = [0] * (2 * (len(shape) + 1))
            for i, ax in enumerate(int(v) % (len(shape) + 1) for v in axes):
                full[ax], full[ax + len(shape) + 1] = pads[i], pads[i + len(axes)]
            pads = full
    rank = len(shape) + 1
    begin, end = pads[:rank], pads[rank:]
    if rank < 3 or any(begin[:-2]) or any(end[:-2]) or min(pads) < 0:
        raise refuse(node, "pads", f"{pads} on {nshape(shape)}", "volnet pads the last two "
                     "(spatial) axes with non-negative amounts only")
    layer = ConstantPad2d((begin[-1], end[-1], begin[-2], end[-2]), value)
    imp.add_layer(node, layer, source)


@handles("Expand")
def expand(imp, node, a):
    """ONNX broadcasting of the computed tensor to ``shape`` (both ways, right-aligned): a
    per-example Expand layer; the batch axis stays the input's."""
    source = imp.computed(node)
    shape = imp.shape(source)
    target = [int(d) for d in imp.const(node, 1, "shape")]
    rank = len(shape) + 1
    if len(target) > rank or (len(target) == rank and target[0] not in (1, imp.batch)):
        raise refuse(node, "shape", f"{target} from {nshape(shape)} adds or stretches the batch "
                     "axis", "broadcast the axes after the batch axis only")
    target = [1] * (rank - 1 - len(target[1:] if len(target) == rank else target)) + \
        (target[1:] if len(target) == rank else target)
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(shape, tuple(target)))
    except ValueError:
        raise refuse(node, "shape", f"{target} does not broadcast with {nshape(shape)}",
                     "each axis must agree or be 1 in one of them") from None
    if out == shape:
        imp.alias[node.output[0]] = imp.name(source)
        return
    imp.add_layer(node, Expand(out), source)


def _narrow(imp, node, source, axis, start, stop, output):
    shape = imp.shape(source)
    rank = len(shape) + 1
    axis = axis + rank if axis < 0 else axis
    if not 0 < axis < rank:
        raise refuse(node, "axis", f"axis {axis} of {nshape(shape)} is the batch axis or out "
                     "of range", "slice and split along axes after the batch axis")
    size = shape[axis - 1]
    start, stop = (max(0, min(size, v + size if v < 0 else v)) for v in (start, stop))
    if stop <= start:
        raise refuse(node, "starts", f"an empty slice {start}:{stop} of axis {axis}",
                     "slice at least one entry")
    if (start, stop) == (0, size):
        imp.alias[output] = imp.name(source)
    else:
        imp.add_layer(node, Narrow(axis, start, stop - start), source, output=output)


@handles("Split")
def split(imp, node, a):
    source = imp.computed(node)
    shape = imp.shape(source)
    axis = a.get("axis", 0)
    rank_axis = axis + len(shape) + 1 if axis < 0 else axis
    if not 0 < rank_axis <= len(shape):
        raise refuse(node, "axis", f"axis {axis} of {nshape(shape)} is the batch axis",
                     "split along axes after the batch axis")
    size = shape[rank_axis - 1]
    sizes = a.get("split")
    if imp.opset >= 13:
        given = imp.const(node, 1, "split", optional=True)
        sizes = None if given is None else [int(v) for v in given]
    if sizes is None:
        parts = a.get("num_outputs", len(node.output))
        step = -(-size // parts)
        sizes = [min(step, size - i * step) for i in range(parts)]
    if sum(sizes) != size or len(sizes) != len(node.output):
        raise refuse(node, "split", f"sizes {sizes} do not cover axis {rank_axis} ({size}) in "
                     f"{len(node.output)} outputs", "give one size per output, summing to the axis")
    start = 0
    for length, output in zip(sizes, node.output):
        if output:
            _narrow(imp, node, source, rank_axis, start, start + length, output)
        start += length


@handles("Slice")
def slice_(imp, node, a):
    source = imp.computed(node)
    if imp.opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = imp.const(node, 1, "starts"), imp.const(node, 2, "ends")
        axes = imp.const(node, 3, "axes", optional=True)
        steps = imp.const(node, 4, "steps", optional=True)
    axes = list(range(len(starts))) if axes is None else [int(v) for v in axes]
    if steps is not None and any(int(s) != 1 for s in steps):
        raise refuse(node, "steps", f"steps {list(steps)}", "volnet slices with step 1")
    if len(axes) != 1:
        raise refuse(node, "axes", f"a slice of {len(axes)} axes at once",
                     "slice one axis per node")
    _narrow(imp, node, source, axes[0], int(starts[0]), int(ends[0]), node.output[0])
