"""``/lecture/patterns`` (slides 21-22): INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC.

The net comes from :func:`volnet.models.pattern`, its table from
:func:`volnet.summary`; the lint checks the lecture's sizing rules against the
table, and the 3x3-versus-7x7 comparison is two more summaries.
"""

from __future__ import annotations

import volnet as vn
from volnet.models.pattern import pattern
from volnet.web.lecture.conv import check_range
from volnet.web.views import summary_rows

LIMITS = {"N": (0, 4), "M": (0, 5), "K": (0, 3), "input": (4, 256), "F": (1, 7),
          "width": (1, 256), "channels": (1, 3), "pool": (0, 1)}


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


def pattern_view(N: int = 2, M: int = 2, K: int = 1, input: int = 32, F: int = 3,
                 width: int = 32, channels: int = 3, pool: int = 1) -> dict:
    """The built pattern's summary table, its lint, and the 3x3 x 3 versus 7x7 comparison."""
    check_range({"N": N, "M": M, "K": K, "input": input, "F": F, "width": width,
                 "channels": channels, "pool": pool}, LIMITS)
    shape = (channels, input, input)
    net = pattern(N, M, K, widths=width, input_shape=shape, kernel_size=F, pool=bool(pool))
    table = vn.summary(net, shape)
    block = f"[[CONV -> RELU]*{N}{' -> POOL' if pool else ''}]*{M}"
    text = " -> ".join(["INPUT"] + [block] * bool(M) + [f"[FC -> RELU]*{K}"] * bool(K) + ["FC"])
    return {"pattern": text, **summary_rows(net, shape),
            "lint": lint(table.rows, input, M, M if pool else 0),
            "compare": compare_stacks(width, max(input, 8))}


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
