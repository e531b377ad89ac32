"""A network typed as a short layer list, ConvNetJS style: ``conv 8 5 pad2, relu, pool 2, fc 10``.

Grammar (items separated by commas, semicolons or newlines; case-insensitive)::

    spec     := item (sep item)*
    item     := "conv" K F [option]*      K filters of size FxF      -> Conv2d
              | "pool" F [option]*        max pooling, stride F      -> MaxPool2d
              | "avgpool" F [option]*     average pooling            -> AvgPool2d
              | "fc" N                    N outputs                  -> (Flatten +) Linear
              | "relu" | "tanh" | "sigmoid" | "leakyrelu"
              | "dropout" P               drop probability 0 <= P < 1
    option   := "stride" S | "pad" P      also written stride2, s2, pad=2, p2

The input volume is fixed by the caller (1x28x28 for the MNIST sample) and the
last layer must produce one score per class. Sizes are capped so a typed net
cannot exhaust the machine: per argument, in parameters (``MAX_PARAMS``) and in
the memory a training step needs at the chosen batch size (parameters, Adam
state and every activation, :func:`training_bytes`), checked against the memory
budget of :mod:`volnet.limits`; every mistake is a ``ConfigError`` naming the item.
"""

from __future__ import annotations

import math
import re

import numpy as np

from volnet.errors import ConfigError, VolnetError
from volnet.layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from volnet.limits import check_budget

MAX_SPEC_CHARS = 400
MAX_ITEMS = 16
MAX_PARAMS = 1_000_000
# Per-argument bounds: (smallest, largest).
LIMITS = {"filters": (1, 64), "size": (1, 9), "stride": (1, 4), "pad": (0, 4), "units": (1, 1024)}
EXAMPLE = "conv 8 5 pad2, relu, pool 2, conv 16 5, relu, pool 2, fc 10"

_OPTION = re.compile(r"^(stride|s|pad|p)=?([0-9]{1,6})$")
_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "leakyrelu": LeakyReLU}


def split_items(spec: str) -> list[str]:
    """The non-empty items of a spec, separators removed.

    Example:
        >>> split_items("conv 8 5 pad2, relu;\\n pool 2")
        ['conv 8 5 pad2', 'relu', 'pool 2']
    """
    return [item.strip() for item in re.split(r"[,;\n]", spec) if item.strip()]


def _int(text: str, what: str, where: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise ConfigError(f"{where}: {what} must be a whole number, got {text!r}")
    low, high = LIMITS[what]
    value = int(text)
    if not low <= value <= high:
        raise ConfigError(f"{where}: {what} must be between {low} and {high}, got {value}")
    return value


def _options(tokens: list[str], where: str) -> dict[str, int]:
    """Parse ``stride S`` / ``pad P`` options (``stride2``, ``s=2``, ``pad 2``, ``p2``)."""
    options: dict[str, int] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        match = _OPTION.match(token)
        if match is None and token in ("stride", "s", "pad", "p") and i + 1 < len(tokens):
            match, i = _OPTION.match(token + tokens[i + 1]), i + 1
        if match is None:
            raise ConfigError(f"{where}: unknown option {token!r}; options are stride S and pad P "
                              "(e.g. 'conv 8 5 stride1 pad2')")
        name = "stride" if match.group(1) in ("stride", "s") else "pad"
        options[name] = _int(match.group(2), name, where)
        i += 1
    return options


def _positional(tokens: list[str], names: tuple[str, ...], where: str, usage: str):
    if len(tokens) < len(names):
        raise ConfigError(f"{where}: expected {usage}")
    return [_int(t, n, where) for t, n in zip(tokens, names)], tokens[len(names):]


def _conv(tokens, where, channels, rng):
    (filters, size), rest = _positional(tokens, ("filters", "size"), where,
                                        "'conv K F' (K filters of size FxF), e.g. 'conv 8 5 pad2'")
    opts = _options(rest, where)
    return Conv2d(channels, filters, size, stride=opts.get("stride", 1), padding=opts.get("pad", 0),
                  rng=rng)


def _fc(tokens, where, shape, rng):
    (units,), rest = _positional(tokens, ("units",), where, "'fc N' (N outputs), e.g. 'fc 10'")
    if rest:
        raise ConfigError(f"{where}: 'fc N' takes one number, got extra {' '.join(rest)!r}")
    inputs = math.prod(shape)
    if inputs * units > MAX_PARAMS:   # checked before the weight matrix is allocated
        raise ConfigError(f"{where}: {inputs:,} inputs x {units} outputs is more than the demo's "
                          f"limit of {MAX_PARAMS:,} parameters; pool earlier or use fewer units")
    return ([Flatten()] if len(shape) != 1 else []) + [Linear(inputs, units, rng=rng)]


def _pool(tokens, where, kind):
    (size,), rest = _positional(tokens, ("size",), where, f"'{kind} F' (a FxF window), e.g. '{kind} 2'")
    opts = _options(rest, where)
    layer = MaxPool2d if kind == "pool" else AvgPool2d
    return layer(size, stride=opts.get("stride", size), padding=opts.get("pad", 0))


def _dropout(tokens, where, rng):
    try:
        prob = float(tokens[0]) if len(tokens) == 1 else None
    except ValueError:
        prob = None
    if prob is None or not 0.0 <= prob < 1.0:
        raise ConfigError(f"{where}: expected 'dropout P' with a drop probability 0 <= P < 1, "
                          f"e.g. 'dropout 0.5'")
    return Dropout(prob, rng=rng)


def _layer(item: str, where: str, shape: tuple[int, ...], rng):
    """Build the layers for one item given the incoming per-example ``shape``."""
    kind, *tokens = item.lower().split()
    if kind in _ACTIVATIONS:
        if tokens:
            raise ConfigError(f"{where}: '{kind}' takes no arguments")
        return [_ACTIVATIONS[kind]()]
    if kind in ("conv", "pool", "avgpool") and len(shape) != 3:
        raise ConfigError(f"{where}: '{kind}' needs a CxHxW volume, but the input here is a "
                          f"vector of {shape[0]}; put conv and pool layers before fc")
    if kind == "conv":
        return [_conv(tokens, where, shape[0], rng)]
    if kind in ("pool", "avgpool"):
        return [_pool(tokens, where, kind)]
    if kind == "dropout":
        return [_dropout(tokens, where, rng)]
    if kind in ("fc", "linear", "dense"):
        return _fc(tokens, where, shape, rng)
    raise ConfigError(f"{where}: unknown layer {kind!r}; use conv, pool, avgpool, fc, relu, tanh, "
                      f"sigmoid, leakyrelu or dropout (e.g. '{EXAMPLE}')")


def _leaves(net):
    """Layers in the order data flows through nested Sequentials (other layers whole)."""
    if isinstance(net, Sequential):
        for _, child in net.named_children():
            yield from _leaves(child)
    else:
        yield net


def training_bytes(net, input_shape, batch_size: int, training: bool = True) -> int:
    """Bytes (float32) one step of ``net`` on ``batch_size`` examples needs, estimated from
    shapes alone: with ``training``, parameters with their gradients and Adam's two moments,
    every layer's output (kept for backward) and two gradient volumes; without, two
    activation volumes. Either way the largest im2col workspace of a convolution, twice.

    Example:
        >>> net = parse_net("conv 8 5 pad2, relu, pool 2, fc 10")
        >>> training_bytes(net, (1, 28, 28), 32) // 1024   # KiB
        8677
    """
    shape, outputs, largest, workspace = tuple(input_shape), [], math.prod(input_shape), 0
    for layer in _leaves(net):
        out = tuple(layer.output_shape(shape))
        if isinstance(layer, Conv2d):   # im2col columns: (C*KH*KW) x (H_out*W_out)
            kh, kw = layer.kernel_size if isinstance(layer.kernel_size, tuple) else \
                (layer.kernel_size,) * 2
            workspace = max(workspace, shape[0] * kh * kw * math.prod(out[1:]))
        outputs.append(math.prod(out))
        largest = max(largest, outputs[-1])
        shape = out
    per_example = 2 * workspace + 2 * largest + (sum(outputs) if training else 0)
    state = 4 * net.num_params() if training else net.num_params()
    return 4 * (state + batch_size * per_example)


def check_training_memory(net, input_shape, batch_size: int, eval_batch: int = 500,
                          max_bytes: int | str | None = None) -> None:
    """Raise a ConfigError (also a BudgetError) when training ``net`` at ``batch_size``, or
    evaluating it ``eval_batch`` examples at a time, would exceed the memory budget."""
    need = max(training_bytes(net, input_shape, batch_size),
               training_bytes(net, input_shape, min(eval_batch, 500), training=False))
    check_budget(need, f"training this net at batch size {batch_size} (parameters, optimizer "
                       "state and activations)", max_bytes, ConfigError)


def parse_net(spec: str, input_shape: tuple[int, int, int] = (1, 28, 28),
              num_classes: int = 10, seed: int = 0, max_bytes: int | str | None = None,
              batch_size: int = 32) -> Sequential:
    """Build a ``Sequential`` from a layer list, checking every volume along the way.

    Args:
        spec: The layer list, e.g. ``"conv 8 5 pad2, relu, pool 2, fc 10"``.
        input_shape: The per-example input volume (C, H, W).
        num_classes: Outputs the last layer must produce.
        seed: Seed of the initial weights, so a spec always builds the same net.
        max_bytes: memory budget (default ``$VOLNET_MAX_BYTES`` or 2 GiB).
        batch_size: the batch size the net will train at, for the memory check.

    Example:
        >>> net = parse_net("conv 8 5 pad2, relu, pool 2, fc 10")
        >>> net.output_shape((1, 28, 28)), net.num_params()
        ((10,), 15898)
    """
    if not isinstance(spec, str):
        raise ConfigError(f"the layer list must be text such as '{EXAMPLE}'")
    if len(spec) > MAX_SPEC_CHARS:
        raise ConfigError(f"the layer list is {len(spec)} characters; the limit is {MAX_SPEC_CHARS}")
    items = split_items(spec)
    if not items:
        raise ConfigError(f"the layer list is empty; type one such as '{EXAMPLE}'")
    if len(items) > MAX_ITEMS:
        raise ConfigError(f"the layer list has {len(items)} items; the limit is {MAX_ITEMS}")
    layers, shape, rng = [], tuple(input_shape), np.random.default_rng(seed)
    for number, item in enumerate(items, start=1):
        where = f"item {number} '{item}'"
        try:
            for layer in _layer(item, where, shape, rng):
                shape = layer.output_shape(shape)
                layers.append(layer)
        except ConfigError:
            raise
        except VolnetError as err:   # e.g. a window larger than the volume
            raise ConfigError(f"{where} does not fit the {'x'.join(map(str, shape))} volume "
                              f"reaching it: {err}") from None
    if shape != (num_classes,):
        raise ConfigError(f"the last layer must give {num_classes} class scores (end with "
                          f"'fc {num_classes}'), but the net ends with shape {shape}")
    net = Sequential(*layers)
    if net.num_params() > MAX_PARAMS:
        raise ConfigError(f"the net has {net.num_params():,} parameters; the demo's limit is "
                          f"{MAX_PARAMS:,} (use fewer filters, pool earlier or a smaller fc)")
    check_training_memory(net, tuple(input_shape), batch_size, max_bytes=max_bytes)
    return net
