"""What the page draws, computed from a network: summary rows, filters, activation maps.

Everything here runs the net in inference mode (``training=False``) and returns
plain JSON-ready lists; images travel as 0-255 integers, one row-major list per
map, normalised per map so faint filters stay visible, and as values with the
range they share (``values`` or ``map_values``, and ``range``), which the page colours on one scale.
"""

from __future__ import annotations

import numpy as np

from volnet.functional.loss import softmax
from volnet.layers import Layer
from volnet.tools.summary import summary

MAX_MAPS = 16       # activation maps shown per layer
MAX_FILTERS = 32    # first-layer filters shown


def to_grey(a: np.ndarray) -> list[int]:
    """Scale an array to 0..255 (min -> 0, max -> 255) and flatten it row-major.

    Example:
        >>> to_grey(np.array([[0.0, 0.5], [1.0, 1.0]]))
        [0, 128, 255, 255]
    """
    a = np.asarray(a, dtype=np.float64)
    low, span = a.min(), np.ptp(a)
    scaled = (a - low) / span if span > 0 else np.zeros_like(a)
    return np.rint(scaled * 255).astype(np.uint8).ravel().tolist()


def _window_text(row: dict) -> str:
    """'F=5 S=1 P=2 K=6' for window layers, from a summary row; '' for others."""
    parts = []
    for key in ("F", "S", "P", "K"):
        value = row.get(key)
        if value is not None:
            value = value if isinstance(value, int) else (
                value[0] if value[0] == value[1] else "x".join(map(str, value)))
            parts.append(f"{key}={value}")
    return " ".join(parts)


def summary_rows(net: Layer, input_shape: tuple[int, ...]) -> dict:
    """The summary table (``volnet.summary``): volumes, F/S/P/K, parameters with and without sharing."""
    table = summary(net, input_shape)
    rows = [{"name": row["name"], "type": row["type"], "volume": row["output"],
             "shape": list(row["shape"]), "window": _window_text(row), "params": row["params"],
             "params_no_sharing": row["params_no_sharing"],
             "receptive_field": row["receptive_field"][0]} for row in table.rows]
    return {"rows": rows, "total_params": table.totals["params"], "macs": table.totals["macs"]}


def first_layer_filters(net: Layer, input_shape: tuple[int, ...]) -> dict:
    """The first weighted layer's filters as images.

    A conv layer gives its (K, C, F, F) filters, channels averaged; a first
    fully connected layer gives each unit's weights over the input image,
    as ConvNetJS shows them.
    """
    for path, layer in net.named_layers():
        weight = layer.params.get("weight")
        if weight is None:
            continue
        if weight.ndim == 4:
            maps = weight.mean(axis=1)
        else:
            maps = weight.reshape((weight.shape[0],) + tuple(input_shape)).mean(axis=1)
        maps = maps[:MAX_FILTERS]
        return {"layer": path, "size": list(maps.shape[1:]),
                "filters": [to_grey(m) for m in maps], **_with_scale(maps)}
    return {"layer": None, "size": [0, 0], "filters": [], "values": [], "range": [0.0, 0.0]}


def _with_scale(maps: np.ndarray, key: str = "values") -> dict:
    """The maps' values (4 significant digits) and their common range, for one colour scale."""
    maps = maps.astype(np.float64)
    values = [[float(f"{v:.4g}") for v in m.ravel()] for m in maps]
    return {key: values, "range": [float(maps.min()), float(maps.max())]}


def _layer_view(name: str, layer: Layer, out: np.ndarray) -> dict:
    view = {"name": name, "layer": repr(layer).split("\n")[0], "shape": list(out.shape[1:])}
    if out.ndim == 4:
        view["maps"] = [to_grey(m) for m in out[0, :MAX_MAPS]]
        view.update(_with_scale(out[0, :MAX_MAPS], "map_values"))
    else:
        view["values"] = np.round(out[0].astype(np.float64), 4).ravel()[:256].tolist()
    return view


def activations(net: Layer, x: np.ndarray) -> dict:
    """Every top-level layer's output for one example ``x`` (1, C, H, W), and its class probabilities."""
    layers, out = [], x
    for name, layer in net.named_children() or [("0", net)]:
        out = layer.forward(out, training=False)
        layers.append(_layer_view(name, layer, out))
    probs = softmax(out.reshape(1, -1).astype(np.float64))[0]
    return {"input": to_grey(x[0, 0]), "layers": layers, "probs": probs.round(6).tolist()}

