"""``/lecture/patterns`` (slides 21-22): INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC.

The net comes from :func:`volnet.models.pattern`, its table from
:func:`volnet.summary`; the lint checks the lecture's sizing rules against the
table, and the 3x3-versus-7x7 comparison is two more summaries.
"""

from __future__ import annotations

import inspect
import re

import volnet as vn
from volnet.errors import ConfigError
from volnet.models.pattern import pattern
from volnet.web.lecture.conv import check_range
from volnet.web.views import summary_rows

LIMITS = {"N": (0, 4), "M": (0, 5), "K": (0, 3), "input": (4, 256), "F": (1, 7),
          "width": (1, 256), "channels": (1, 3), "pool": (0, 1)}
_DEFAULT = {name: p.default for name, p in inspect.signature(pattern).parameters.items()}
# the page's settings when it asks for none: vn.models.pattern's own defaults
DEFAULTS = {"N": _DEFAULT["n"], "M": _DEFAULT["m"], "K": _DEFAULT["k"],
            "input": _DEFAULT["input_shape"][1], "channels": _DEFAULT["input_shape"][0],
            "F": _DEFAULT["kernel_size"], "widths": tuple(_DEFAULT["widths"]),
            "pool": int(_DEFAULT["pool"])}


def default_widths(m: int) -> tuple[int, ...]:
    """vn.models.pattern's widths (32, 64) for M blocks: cut, or continued by doubling."""
    widths = list(DEFAULTS["widths"][:m])
    while len(widths) < m:
        widths.append(min(LIMITS["width"][1], widths[-1] * 2))
    return tuple(widths)


def parse_widths(text: str | None, m: int) -> tuple[int, ...]:
    """The "filters per CONV" field: one int per block, comma-separated ("32, 64"); absent,
    :func:`default_widths`."""
    if text is None:
        return default_widths(m)
    if not re.fullmatch(r"\s*([0-9]{1,4}\s*(,\s*[0-9]{1,4}\s*)*)?", text):
        raise ConfigError(f"filters per CONV must be integers separated by commas (one per "
                          f"block, e.g. 32, 64), got {text!r}")
    widths = tuple(int(v) for v in text.split(",") if v.strip())
    for value in widths:
        check_range({"width": value}, LIMITS)
    return widths


def lint(rows: list[dict], size: int, m: int, pools: int) -> list[str]:
    """The lecture's sizing rules, one message per broken rule (empty when all hold)."""
    warnings = []
    if pools and size % 2 ** pools:
        warnings.append(f"input {size} is not divisible by 2^M = {2 ** pools}: a 2x2 pool "
                        "meets an odd size and drops its last row and column")
    previous, large = size, []
    for row in rows:
        shape, F, S, P = row["shape"], row.get("F"), row.get("S"), row.get("P")
        if F is not None and len(shape) == 3:
            room = previous - F[0] + 2 * P[0]
            if room % S[0]:
                warnings.append(f"{row['name']} ({row['type']}): (W - F + 2P)/S + 1 = "
                                f"({previous} - {F[0]} + 2*{P[0]})/{S[0]} + 1 = "
                                f"{room / S[0] + 1:g} is not an integer")
            if row["type"] == "Conv2d" and (S[0] != 1 or 2 * P[0] != F[0] - 1):
                warnings.append(f"{row['name']}: F={F[0]}, P={P[0]}, S={S[0]} changes the "
                                "size; the lecture keeps it with S=1, P=(F-1)/2")
            if row["type"] == "Conv2d" and F[0] > 5:
                large.append(row["name"])
            if row["type"] == "MaxPool2d" and (F[0], S[0]) != (2, 2):
                warnings.append(f"{row['name']}: pool F={F[0]}, S={S[0]}; the lecture uses F=2, S=2")
        if len(shape) == 3:
            previous = shape[1]
    if large:
        warnings.append(f"{', '.join(large)}: filters larger than 5x5; stacks of 3x3 (P=1) or "
                        "5x5 (P=2) CONVs see as far with fewer weights and more non-linearities")
    return warnings


def pattern_view(N: int = DEFAULTS["N"], M: int = DEFAULTS["M"], K: int = DEFAULTS["K"],
                 input: int = DEFAULTS["input"], F: int = DEFAULTS["F"],
                 widths: tuple[int, ...] = DEFAULTS["widths"],
                 channels: int = DEFAULTS["channels"], pool: int = DEFAULTS["pool"]) -> dict:
    """The built pattern's summary table, its lint, and the 3x3 x 3 versus 7x7 comparison.

    ``widths`` gives each block's filters (one int per block, as ``vn.models.pattern``
    takes them; a single value serves every block). The reply repeats the settings used.
    """
    check_range({"N": N, "M": M, "K": K, "input": input, "F": F, "channels": channels,
                 "pool": pool}, LIMITS)
    widths = tuple(widths)
    if M and len(widths) not in (1, M):
        raise ConfigError(f"filters per CONV: {len(widths)} values for M = {M} blocks; give "
                          f"one per block (or one for all)")
    shape = (channels, input, input)
    net = pattern(N, M, K, widths=(widths[0] if len(widths) == 1 else widths) if M else (),
                  input_shape=shape, kernel_size=F, pool=bool(pool))
    table = vn.summary(net, shape)
    block = f"[[CONV -> RELU]*{N}{' -> POOL' if pool else ''}]*{M}"
    text = " -> ".join(["INPUT"] + [block] * bool(M) + [f"[FC -> RELU]*{K}"] * bool(K) + ["FC"])
    return {"pattern": text, **summary_rows(net, shape),
            "lint": lint(table.rows, input, M, M if pool else 0),
            "compare": compare_stacks((widths or DEFAULTS["widths"])[0], max(input, 8)),
            "settings": {"N": N, "M": M, "K": K, "input": input, "channels": channels, "F": F,
                         "widths": list(widths), "pool": pool}}


def compare_stacks(channels: int, size: int) -> list[dict]:
    """Three 3x3 CONV -> RELU layers against one 7x7 (C channels in and out, P keeps the size)."""
    stacks = {"three 3x3 CONV": [layer for _ in range(3) for layer in
                                 (vn.Conv2d(channels, channels, 3, padding=1), vn.ReLU())],
              "one 7x7 CONV": [vn.Conv2d(channels, channels, 7, padding=3), vn.ReLU()]}
    result = []
    for name, layers in stacks.items():
        net = vn.Sequential(*layers)
        table = vn.summary(net, (channels, size, size))
        result.append({"name": name, "params": table.totals["params"],
                       "macs": table.totals["macs"],
                       "nonlinearities": sum(isinstance(l, vn.ReLU) for l in layers),
                       "receptive_field": table.rows[-1]["receptive_field"][0]})
    return result
