"""FC -> CONV conversion, the fully connected side: what flows through the walk, and the
rules for layers after ``Flatten``.

``tools/fully_conv.py`` walks the network (containers and CONV/POOL layers) and
hands each layer here once the volume has been flattened ("flat": the first
``Linear`` becomes a ``Conv2d`` whose kernel is the whole volume) or has become
a feature vector ("vector": later ``Linear`` layers become 1x1 convolutions,
``BatchNorm1d`` a ``BatchNorm2d``). See ``fully_conv.py`` for the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from volnet.errors import ConfigError, ShapeError
from volnet.layers import (
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Layer,
    Linear,
    Softmax,
)
from volnet.layers.activation import Elementwise


@dataclass(frozen=True)
class WalkState:
    """What flows between two layers during the walk.

    mode: "spatial" (a (C, H, W) volume), "flat" (a flattened volume; the
        converted net still carries it as (C, H, W)) or "vector" (features; the
        converted net carries them as (D, 1, 1) per position).
    shape: the original network's per-example shape at this point.
    stride: input pixels per step of the converted network's map here.
    volume: the (C, H, W) behind a "flat" shape.
    exact: no zero padding or partial pooling window so far, so a map position
        sees exactly what the original network sees on its crop.
    """

    mode: str
    shape: tuple
    stride: tuple = (1, 1)
    volume: tuple = ()
    exact: bool = True


def refusal(layer: Layer, path: str, why: str) -> ConfigError:
    """The ConfigError saying why ``layer`` (at ``path``) cannot be converted."""
    where = f"{type(layer).__name__}({layer.extra_repr()})" + (f" at {path}" if path else "")
    return ConfigError(f"to_fully_conv cannot convert {where}: {why}")


def _describe(state: WalkState) -> str:
    if state.mode == "flat":
        return f"a flattened {state.volume} volume"
    return f"a {state.mode} {state.shape} at stride {state.stride}"


def is_pointwise(layer: Layer) -> bool:
    """Layers acting on each position (and each value) alone, in every layout."""
    return isinstance(layer, (Elementwise, Dropout)) and not isinstance(layer, Softmax)


def _convert_flat(layer: Layer, path: str, state: WalkState):
    if isinstance(layer, Linear):
        c, h, w = state.volume
        if layer.in_features != c * h * w:
            raise ShapeError(f"{layer.where()} expected {layer.in_features} input features, "
                             f"got a flattened {state.volume} volume ({c * h * w})")
        conv = _conv_from_linear(layer, c, (h, w))
        return conv, replace(state, mode="vector", shape=(layer.out_features,), volume=())
    if is_pointwise(layer):
        return layer.copy(), state
    if isinstance(layer, Flatten):
        return None, state
    if isinstance(layer, BatchNorm1d):
        raise refusal(layer, path, f"it normalises each of the {state.shape[0]} features of a "
                                   f"flattened {state.volume} volume separately, which is not a "
                                   "per-channel operation; use BatchNorm2d before Flatten")
    raise refusal(layer, path, f"it acts on a flattened {state.volume} volume as a whole; only "
                               "Linear, elementwise and dropout layers may follow Flatten")


def _convert_vector(layer: Layer, path: str, state: WalkState):
    if isinstance(layer, Linear):
        if layer.in_features != state.shape[0]:
            raise ShapeError(f"{layer.where()} expected {layer.in_features} input features, "
                             f"got {state.shape[0]}")
        return _conv_from_linear(layer, layer.in_features, (1, 1)), replace(
            state, shape=(layer.out_features,))
    if is_pointwise(layer):
        return layer.copy(), state
    if isinstance(layer, Flatten):
        return None, state
    if isinstance(layer, Softmax):
        if layer.dim not in (1, -1):
            raise refusal(layer, path, "a softmax over features needs dim=1")
        return Softmax(dim=1), state   # features are channels now
    if isinstance(layer, BatchNorm1d):
        return _bn2d_from_bn1d(layer, path, state), state
    raise refusal(layer, path, f"it is not known to act on a feature vector of {state.shape[0]} "
                               "values per position; only Linear, elementwise, dropout, softmax "
                               "and BatchNorm1d layers may follow the first FC layer")


def _conv_from_linear(linear: Linear, in_channels: int, kernel: tuple[int, int]) -> Conv2d:
    """The Conv2d computing ``linear`` on a flattened (in_channels, *kernel) volume."""
    weight = linear.params["weight"].reshape(linear.out_features, in_channels, *kernel).copy()
    # Build a 1x1x1 conv and install the weights: constructing it at full size
    # would draw (and throw away) 100 M random numbers for VGG's first FC layer.
    conv = Conv2d(1, 1, 1, bias="bias" in linear.params, dtype=weight.dtype)
    conv.in_channels, conv.out_channels, conv.kernel_size = in_channels, linear.out_features, kernel
    conv.params["weight"] = weight
    if "bias" in linear.params:
        conv.params["bias"] = linear.params["bias"].copy()
    conv.frozen = set(linear.frozen)
    return conv


def _bn2d_from_bn1d(bn: BatchNorm1d, path: str, state: WalkState) -> BatchNorm2d:
    """The same per-feature normalisation applied to the channels of a map."""
    if bn.num_features != state.shape[0]:
        raise ShapeError(f"{bn.where()} expected {bn.num_features} features, got {state.shape[0]}")
    new = BatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                      dtype=bn.params["weight"].dtype)
    for store, source in ((new.params, bn.params), (new.buffers, bn.buffers)):
        for name, value in source.items():
            store[name] = value.copy()
    new.frozen = set(bn.frozen)
    return new
