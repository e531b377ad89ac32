"""``/lecture/receptive-field``: what one unit sees, in theory and in effect.

The theoretical field comes from :func:`volnet.receptive_field` (shapes only);
the effective one is the gradient of the chosen unit with respect to the input,
|d unit / d input| averaged over a batch of random inputs (Luo et al. 2016,
"Understanding the effective receptive field", average over many inputs: one
input's gradient is speckle, the average shows the field's Gaussian shape). It
is zero outside the theoretical field and concentrates in its centre.
"""

from __future__ import annotations

import threading

import numpy as np

import volnet as vn
from volnet.errors import ConfigError
from volnet.layers import Sequential
from volnet.models.registry import build
from volnet.web.views import to_grey

MODELS = {   # name -> (input shape used here, builder keyword arguments)
    "lenet5": ((1, 28, 28), {}),
    "cifar_example": ((3, 32, 32), {}),
    "alexnet": ((3, 227, 227), {}),
    "vgg16": ((3, 112, 112), {"hidden_features": 64}),   # small FCs: only the CONVs matter here
    "resnet18": ((3, 112, 112), {}),
    "context_module": ((21, 66, 66), {"init": "he"}),   # dilations 1, 1, 2, 4, 8, 16, 1
}
SAMPLES = (4, 32)     # random inputs averaged: at least, at most
MAC_BUDGET = 1.5e9    # float64 multiply-adds per request: fewer inputs for VGG-16's deep layers
_CACHE: dict = {}   # model name -> float64 net; ("summary", name) -> its summary
_LOCK = threading.Lock()   # the cached models hold forward caches: one request at a time


def model(name: str):
    """The zoo model ``name``, built once (seed 0) and kept."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    if name not in _CACHE:
        # float64 runs the exact im2col kernels, so the gradient is exactly zero outside the
        # theoretical field (float32 Winograd tiles would leave rounding noise around it)
        _CACHE[name] = build(name, seed=0, **MODELS[name][1]).astype("float64")
    return _CACHE[name]


def units(net, prefix: str = "") -> list[tuple[str, object]]:
    """The net as a chain: Sequentials opened up, other layers (blocks, leaves) kept whole."""
    chain = []
    for name, child in net.named_children():
        if isinstance(child, Sequential):
            chain += units(child, prefix + name + ".")
        else:
            chain.append((prefix + name, child))
    return chain


def layer_choices(name: str) -> list[dict]:
    """Every unit of the chain with an image-shaped output: path, type, output volume."""
    shape, choices = MODELS[name][0], []
    for path, layer in units(model(name)):
        shape = layer.output_shape(shape)
        if len(shape) == 3:
            choices.append({"path": path, "type": type(layer).__name__, "shape": list(shape)})
    return choices


def samples(name: str, paths: list[str]) -> int:
    """How many random inputs to average for a field up to the units ``paths``: as many as
    :data:`MAC_BUDGET` pays for, within :data:`SAMPLES` (LeNet: 32; VGG-16's conv5: 4)."""
    rows = _summary(name).rows
    macs = sum(r["macs"] for r in rows
               if any(r["name"] == p or r["name"].startswith(p + ".") for p in paths))
    return int(np.clip(MAC_BUDGET // max(macs, 1), *SAMPLES))


def _summary(name: str):
    key = ("summary", name)
    if key not in _CACHE:
        _CACHE[key] = vn.summary(model(name), MODELS[name][0])
    return _CACHE[key]


def field_view(name: str, layer: str, row: int, col: int, seed: int = 0) -> dict:
    """Theoretical and effective receptive field of unit (row, col) of ``layer``'s output."""
    with _LOCK:
        return _field_view(name, layer, row, col, seed)


def _field_view(name: str, layer: str, row: int, col: int, seed: int) -> dict:
    net, input_shape = model(name), MODELS[name][0]
    chain = units(net)
    paths = [path for path, _ in chain]
    if layer not in paths:
        raise ConfigError(f"{name} has no layer {layer!r} here; choose one of the listed layers")
    chain = chain[:paths.index(layer) + 1]
    field = vn.receptive_field(net, input_shape, layer=layer)
    n = samples(name, [path for path, _ in chain])
    x = np.random.default_rng(seed).standard_normal((n, *input_shape))
    out = x
    for _, unit in chain:
        out = unit.forward(out, cache=True)
    if out.ndim != 4:
        raise ConfigError(f"{layer} outputs a vector; choose a layer with an image-shaped output")
    rows, cols = out.shape[2:]
    if not (0 <= row < rows and 0 <= col < cols):
        raise ConfigError(f"unit ({row}, {col}) is outside {layer}'s {rows}x{cols} output")
    dout = np.zeros_like(out)
    dout[:, :, row, col] = 1.0   # the sum of the unit's column: every channel at (row, col)
    for _, unit in reversed(chain):   # eval mode: the inputs of the batch never mix
        dout = unit.backward(dout)
    grad = np.abs(dout).sum(axis=1).mean(axis=0)
    nonzero = np.argwhere(grad > 0)
    centre = [field.start[a] + (row, col)[a] * field.jump[a] for a in range(2)]
    box = [[c - (s - 1) / 2, c + (s - 1) / 2] for c, s in zip(centre, field.size)]
    return {
        "model": name, "layer": layer, "input_shape": list(input_shape),
        "output_shape": list(out.shape[1:]), "unit": [row, col],
        "size": list(field.size), "jump": list(field.jump), "start": list(field.start),
        "box": box,   # [[top, bottom], [left, right]] in input pixels, may reach past the image
        "effective": to_grey(grad), "effective_max": float(grad.max()), "samples": n,
        "effective_box": (nonzero.min(axis=0).tolist() + nonzero.max(axis=0).tolist()
                          if len(nonzero) else None),   # [top, left, bottom, right]
    }
