"""FC -> CONV conversion: rewrite a classifier so that it slides over bigger images.

A ``Linear`` layer that reads a flattened (C, H, W) volume computes the same
dot products as a ``Conv2d`` with K filters of size H x W x C applied once;
every later ``Linear`` is a 1x1 convolution (CS231n, "Converting FC layers to
CONV layers"; Caffe's net surgery). Because both layouts store weights
output-first and flatten in (C, H, W) order, each conversion is a reshape.

The converted network computes exactly the original's scores on an input of
the original size (as a 1x1 map) and, on a bigger image, one score vector per
position of a grid with the network's total stride. It is meant for
inference: ``BatchNorm1d`` becomes a ``BatchNorm2d`` with the same parameters
and running statistics, which agrees in evaluation mode.

What is rewritten, and why it is exact at every map position:

* ``Flatten`` disappears; the first ``Linear`` after it becomes a ``Conv2d``
  whose kernel is the whole incoming volume (VGG: 7x7x512 -> 1x1x4096), the
  next ones 1x1 convolutions.
* ``GlobalAvgPool2d`` becomes ``AvgPool2d`` over its input size at the native
  input with stride 1 (each position averages its own crop's window).
* ``AdaptiveAvgPool2d`` is dropped where it is the identity at ``input_shape``
  (torchvision's VGG ``(7, 7)`` at 224), becomes ``AvgPool2d`` where its
  windows tile the input evenly, and is refused otherwise (its windows would
  change with the image size).
* Elementwise layers, dropout and ``Softmax(dim=1)`` act per position and are
  copied; ``Residual`` and ``Concat`` are converted branch by branch.
* ``ConvTranspose2d`` is copied; its stride divides the total stride (which must
  be whole again at the output), and dense maps are no longer exact at the borders.
* ``SideBranch`` (GoogLeNet's auxiliary classifiers) disappears: it is the
  identity at inference.

Everything else is refused with a ``ConfigError`` naming the layer's path.

This module walks the containers; the rules for the CONV/POOL side live in
``tools/fully_conv_spatial.py``, those for layers after ``Flatten`` (``Linear`` ->
``Conv2d``, ``BatchNorm1d`` -> ``BatchNorm2d``) and the walk's state in
``tools/fc_to_conv.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from fractions import Fraction

from volnet.errors import ConfigError
from volnet.layers import (
    Concat,
    Identity,
    Layer,
    Residual,
    Sequential,
)
from volnet.layers.base import join_key
from volnet.layers.side_branch import SideBranch
from volnet.tools.fc_to_conv import (
    WalkState,
    _convert_flat,
    _convert_vector,
    _describe,
    refusal,
)
from volnet.tools.fully_conv_spatial import convert_spatial


class FullyConvNet(Sequential):
    """A classifier rewritten by :func:`to_fully_conv`; a ``Sequential`` that remembers
    the original network's input size, its total stride and whether dense maps are exact.

    Attributes:
        input_shape: the original network's per-example input (C, H, W): one crop.
        stride: (SH, SW), input pixels between neighbouring map positions.
        exact: True when no layer zero-pads or pools a partial window, so each
            map position equals the original network on its crop bit for bit
            (up to float rounding). With padding, a position sees the real
            neighbouring pixels where a lone crop sees zeros.
    """

    def __init__(self, children: OrderedDict[str, Layer], input_shape: tuple, stride: tuple,
                 exact: bool) -> None:
        super().__init__(children)
        self.input_shape, self.stride, self.exact = tuple(input_shape), tuple(stride), bool(exact)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, stride={self.stride}, exact={self.exact}"


def to_fully_conv(net: Layer, input_shape: tuple[int, int, int]) -> FullyConvNet:
    """A new network with every FC layer rewritten as a CONV layer (no arrays shared).

    Args:
        net: a classifier built from volnet layers: CONV/POOL layers, then
            ``Flatten`` and ``Linear`` layers (with activations, dropout and
            batch norm), possibly nested in ``Sequential``, ``Residual`` and ``Concat``.
        input_shape: the per-example input (C, H, W) the classifier was built for.

    Returns:
        A :class:`FullyConvNet` giving (N, K, 1, 1) on (N, C, H, W) inputs of
        ``input_shape`` (the original's K scores) and (N, K, H_map, W_map) on
        bigger ones. State-dict keys are the original's (FC weights reshaped).

    Raises:
        ConfigError: naming the first layer that has no per-position equivalent.
        ShapeError: when ``net`` does not accept ``input_shape`` at all.

    Example:
        >>> net = Sequential(Conv2d(3, 8, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(8 * 3 * 3, 10))
        >>> fc = to_fully_conv(net, (3, 8, 8))
        >>> fc[3]
        Conv2d(8, 10, kernel_size=(3, 3))
        >>> fc.output_shape((3, 8, 8)), fc.output_shape((3, 16, 16)), fc.stride
        ((10, 1, 1), (10, 5, 5), (2, 2))
    """
    shape = _check_input_shape(input_shape)
    if not isinstance(net, Layer):
        raise ConfigError(f"to_fully_conv expects a volnet Layer, got {type(net).__name__}")
    body, state = _convert(net, "", WalkState("spatial", shape))
    _check_output(net, state, shape)
    if any(isinstance(s, Fraction) for s in state.stride):
        raise ConfigError(f"to_fully_conv: {type(net).__name__} upsamples more than it "
                          f"downsamples (total stride {tuple(str(s) for s in state.stride)}), "
                          "so its score map has no whole-pixel step; dense evaluation needs "
                          "an integer total stride")
    if type(body) is Sequential:
        children = OrderedDict((key, child) for key, _, child in _keyed_children(body))
    else:   # a lone block: splice it in under "" so its state-dict keys do not change
        children = OrderedDict([("", body if body is not None else Identity())])
    return FullyConvNet(children, shape, state.stride, state.exact)


def _check_input_shape(input_shape) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"to_fully_conv: input_shape must be the classifier's per-example "
                          f"input (C, H, W) of positive ints, e.g. (3, 224, 224); got {input_shape!r}")
    return shape


def _check_output(net: Layer, state: WalkState, input_shape: tuple) -> None:
    """The original output must be one score vector per crop (a 1x1 map once converted)."""
    spatial = state.volume[1:] if state.mode == "flat" else state.shape[1:]
    if state.mode != "vector" and tuple(spatial) != (1, 1):
        raise ConfigError(
            f"to_fully_conv: {type(net).__name__} gives {state.shape} per example for input "
            f"{input_shape}, not a vector of class scores; dense evaluation needs a classifier "
            "ending in Linear layers (or in a 1x1 volume).")


def _convert(layer: Layer, path: str, state: WalkState) -> tuple[Layer | None, WalkState]:
    """Convert one layer (recursively); None means it disappears."""
    if isinstance(layer, Sequential):
        return _convert_sequential(layer, path, state)
    if isinstance(layer, Residual):
        return _convert_residual(layer, path, state)
    if isinstance(layer, Concat):
        return _convert_concat(layer, path, state)
    if isinstance(layer, SideBranch):
        return None, state   # an auxiliary head: the identity at inference
    chain = _graph_chain(layer)
    if chain is not None:   # an imported ONNX graph that is a plain chain of layers
        return _convert_sequential(chain, path, state)
    if layer.named_children():
        raise refusal(layer, path, "only Sequential, Residual and Concat containers are "
                                   "understood; rebuild the block from those")
    convert = {"spatial": convert_spatial, "flat": _convert_flat, "vector": _convert_vector}
    return convert[state.mode](layer, path, state)


def _graph_chain(layer):
    """An imported :class:`~volnet.layers.graph.Graph` whose nodes form one chain of layers,
    as a Sequential in node order (same child names); None for anything else."""
    nodes = getattr(layer, "nodes", None)
    if nodes is None or not hasattr(layer, "input_name"):
        return None
    tensor = layer.input_name
    for node in nodes:
        if node.kind != "layer" or node.inputs != (tensor,):
            what = (f"joins branches ({node.kind})" if node.kind != "layer"
                    else f"starts a branch from {node.inputs[0]!r}")
            raise refusal(layer, layer.path, f"node {node.name!r} {what}; dense evaluation of "
                          "imported graphs covers chains of layers (VGG, AlexNet), not residual "
                          "or concatenated ones")
        tensor = node.output
    seq = Sequential(OrderedDict((node.name, layer[node.name]) for node in nodes))
    seq._set_path(layer.path)
    return seq


def _keyed_children(block):
    """(own key, key in state-dict paths, child): FlatConcat shows every branch as "" in
    paths but keeps distinct keys of its own, which the rebuilt block must keep too."""
    return [(key, name, child) for key, (name, child)
            in zip(block._children, block.named_children())]


def _same_kind(block, children: OrderedDict[str, Layer], fallback):
    """A container of ``block``'s class (e.g. FlatConcat) holding ``children``."""
    try:
        return type(block)(children)
    except TypeError:   # a subclass with another constructor: the plain container computes the same
        return fallback(children)


def _convert_sequential(seq: Sequential, path: str, state: WalkState):
    children = OrderedDict()
    for key, name, child in _keyed_children(seq):
        new, state = _convert(child, join_key(path, name), state)
        if new is not None:
            children[key] = new
    return (_same_kind(seq, children, Sequential) if children else None), state


def _convert_residual(block: Residual, path: str, state: WalkState):
    names = {id(child): name for name, child in block.named_children()}
    body_name = names[id(block.body)]
    body, after_body = _convert(block.body, join_key(path, body_name), state)
    short_name, short, after_short = "shortcut", None, state
    if block.shortcut is not None:
        short_name = names[id(block.shortcut)]
        short, after_short = _convert(block.shortcut, join_key(path, short_name), state)
        short = short if short is not None else Identity()
    if replace(after_body, exact=True) != replace(after_short, exact=True):
        raise refusal(block, path, f"its body ends as {_describe(after_body)} but its shortcut "
                                   f"as {_describe(after_short)}; both must stay per-position alike")
    out = replace(after_body, exact=after_body.exact and after_short.exact)
    act = None
    if block.activation is not None:
        act, out = _convert(block.activation, join_key(path, "activation"), out)
    new = Residual(body if body is not None else Identity(), short, act,
                   body_name=body_name, shortcut_name=short_name)
    return new, out


def _convert_concat(block: Concat, path: str, state: WalkState):
    children, states = OrderedDict(), []
    for key, name, branch in _keyed_children(block):
        new, after = _convert(branch, join_key(path, name), state)
        children[key] = new if new is not None else Identity()
        states.append(after)
    first = states[0]
    same = {(s.mode, s.stride, (s.volume or s.shape)[1:] if s.mode != "vector" else ())
            for s in states}
    if len(same) != 1:
        raise refusal(block, path, "its branches end in different layouts or strides ("
                      + ", ".join(_describe(s) for s in states) + ")")
    exact = all(s.exact for s in states)
    if first.mode == "vector":
        out = replace(first, shape=(sum(s.shape[0] for s in states),), exact=exact)
    elif first.mode == "spatial":
        out = replace(first, shape=(sum(s.shape[0] for s in states),) + first.shape[1:], exact=exact)
    else:   # flattened volumes joined end to end = channels joined, then flattened (C outermost)
        volume = (sum(s.volume[0] for s in states),) + first.volume[1:]
        out = replace(first, shape=(volume[0] * volume[1] * volume[2],), volume=volume, exact=exact)
    return _same_kind(block, children, Concat), out
