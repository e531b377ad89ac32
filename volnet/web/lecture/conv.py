"""``/lecture/conv`` (slides 8-12): one CONV layer on a small volume, cell by cell.

The input and filters hold small integers, as in the CS231n animation, so a
reader can check each product by eye; every number the page shows comes from
:class:`volnet.Conv2d` (the output volume), :func:`volnet.summary` (parameter
counts) or NumPy on the same arrays (the products of one window).
"""

from __future__ import annotations

import numpy as np

import volnet as vn
from volnet.errors import ConfigError

LIMITS = {"W": (1, 11), "D": (1, 3), "F": (1, 7), "S": (1, 4), "P": (0, 3), "K": (1, 4),
          "seed": (0, 10**6)}


def check_range(values: dict, limits: dict) -> dict:
    """Check every value is an int inside its limits; raise a ConfigError naming the bad one."""
    for name, value in values.items():
        low, high = limits[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return values


def size_formula(W: int, F: int, S: int, P: int) -> dict:
    """The lecture's (W - F + 2P)/S + 1 with the numbers, and why a setting is invalid.

    Example:
        >>> size_formula(7, 3, 2, 0)["out_size"], size_formula(7, 3, 3, 0)["valid"]
        (3, False)
    """
    room = W - F + 2 * P
    text = f"(W - F + 2P)/S + 1 = ({W} - {F} + 2*{P})/{S} + 1"
    if room < 0:
        return {"valid": False, "formula": f"{text} < 1",
                "why": f"the filter ({F}) is wider than the padded input ({W} + 2*{P} = "
                       f"{W + 2 * P}); use a smaller F or more padding P"}
    if room % S:
        return {"valid": False, "formula": f"{text} = {room / S + 1:g}",
                "why": f"{room}/{S} is not an integer: the filter does not fit across the "
                       f"input in steps of {S}; change S or P"}
    out = room // S + 1
    return {"valid": True, "formula": f"{text} = {out}", "out_size": out, "why": ""}


def conv_layer(W: int, D: int, F: int, S: int, P: int, K: int, seed: int):
    """The page's Conv2d and input: small integers (input 0..2, weights -1..1, bias 0..1)."""
    rng = np.random.default_rng(seed)
    layer = vn.Conv2d(D, K, F, stride=S, padding=P, dtype=np.float64)
    layer.params["weight"][...] = rng.integers(-1, 2, size=(K, D, F, F))
    layer.params["bias"][...] = rng.integers(0, 2, size=K)
    x = rng.integers(0, 3, size=(1, D, W, W)).astype(np.float64)
    return layer, x


def conv_view(W: int, D: int, F: int, S: int, P: int, K: int, seed: int = 0,
              cell: int = 0) -> dict:
    """Everything ``/lecture/conv`` draws for one setting and one highlighted output cell.

    ``cell`` counts output cells filter by filter, row by row (it wraps around).
    """
    check_range({"W": W, "D": D, "F": F, "S": S, "P": P, "K": K, "seed": seed}, LIMITS)
    view = {"W": W, "D": D, "F": F, "S": S, "P": P, "K": K, **size_formula(W, F, S, P)}
    row = None
    if view["valid"]:
        net = vn.Sequential(vn.Conv2d(D, K, F, stride=S, padding=P))
        row = vn.summary(net, (D, W, W)).rows[-1]
    view["params"] = K * (F * F * D + 1) if row is None else row["params"]
    view["params_no_sharing"] = None if row is None else row["params_no_sharing"]
    view["params_formula"] = f"K * (F*F*D + 1) = {K} * ({F}*{F}*{D} + 1)"
    if not view["valid"]:
        return view
    layer, x = conv_layer(W, D, F, S, P, K, seed)
    out = layer.forward(x)[0]                   # (K, O, O) from volnet's kernel
    padded = np.pad(x[0], ((0, 0), (P, P), (P, P)))
    size = view["out_size"]
    k, rest = divmod(cell % (K * size * size), size * size)
    i, j = divmod(rest, size)
    window = padded[:, i * S:i * S + F, j * S:j * S + F]
    products = window * layer.params["weight"][k]
    view.update({
        "input": padded.tolist(), "weights": layer.params["weight"].tolist(),
        "bias": layer.params["bias"].tolist(), "output": out.tolist(),
        "cell": {"k": k, "i": i, "j": j, "index": cell % (K * size * size),
                 "top": i * S, "left": j * S, "products": products.tolist(),
                 "slice_sums": products.sum(axis=(1, 2)).tolist(),
                 "bias": float(layer.params["bias"][k]), "value": float(out[k, i, j])},
    })
    return view
