"""``summary(net, input_shape)``: the lecture's table of volumes, parameters, costs and fields.

Per layer: output volume in the lecture's notation (``55x55x96``), F/S/P/K and
dilation, parameters with and without sharing, multiply-adds, activation
memory and the receptive field with its jump. Totals follow. Everything is
computed from shapes (``output_shape``) and parameter sizes; no data runs.

Memory follows the lecture's accounting (the VGG-16 breakdown): the input and
every layer output count once, except ReLU-like activations, dropout and
Flatten, which frameworks run in place or as views. That is the forward pass
of one batch; training keeps roughly twice as much for the backward pass.
Memory is in MiB (2**20 bytes). A pooling layer in ceil mode (Caffe's
rounding, torchvision's ``ceil_mode=True``) whose window does not tile its
input is marked ``(ceil)``: its output size is (W - F + 2P)/S + 1 rounded up.
"""

from __future__ import annotations

import json
import math

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import Dropout, Flatten, Identity, LeakyReLU, ReLU, SideBranch, Sigmoid, Tanh
from volnet.layers.base import Layer
from volnet.tools.flops import layer_macs, params_without_sharing
from volnet.tools.walk import walk

IN_PLACE = (ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, Identity, Flatten, SideBranch)
MIB = 2 ** 20


def volume(shape) -> str:
    """Lecture notation: (C, H, W) -> 'HxWxC'; a vector (n,) -> '1x1xn'.

    Example:
        >>> volume((96, 55, 55))
        '55x55x96'
    """
    if len(shape) == 3:
        return f"{shape[1]}x{shape[2]}x{shape[0]}"
    if len(shape) == 1:
        return f"1x1x{shape[0]}"
    return "x".join(str(s) for s in shape)


def _pair_text(pair) -> str:
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _hyper(layer) -> dict:
    """F, S, P, K and dilation of a window layer (None where they do not apply)."""
    is_window = hasattr(layer, "kernel_size") and hasattr(layer, "stride")
    weight = getattr(layer, "params", {}).get("weight") if layer is not None else None
    is_conv = is_window and weight is not None and weight.ndim == 4
    return {
        "F": tuple(layer.kernel_size) if is_window else None,
        "S": tuple(layer.stride) if is_window else None,
        "P": tuple(getattr(layer, "padding", (0, 0))) if is_window else None,
        "K": _filters(layer, weight) if is_conv else None,
        "dilation": tuple(getattr(layer, "dilation", (1, 1))) if is_conv else None,
    }


def _ceil_note(record) -> str | None:
    """'(112 - 3 + 2*0)/2 + 1 = 55.5 -> 56' where a ceil-mode window rounds up, else None."""
    layer = record.layer
    if not getattr(layer, "ceil_mode", False) or len(record.input_shape) != 3:
        return None
    for axis in (0, 1):
        size, f = record.input_shape[1 + axis], layer.kernel_size[axis]
        st, pad = layer.stride[axis], layer.padding[axis]
        if (size - f + 2 * pad) % st:
            exact = (size - f + 2 * pad) / st + 1
            return (f"({size} - {f} + 2*{pad})/{st} + 1 = {exact:g} -> "
                    f"{record.output_shape[1 + axis]}")
    return None


def _filters(layer, weight) -> int:
    """K: output channels (a transposed convolution's weight is input-first)."""
    return int(layer.out_channels) if getattr(layer, "transposed", False) else int(weight.shape[0])


def _no_sharing(layer, out) -> int:
    # a composite walked as one leaf (e.g. SideBranch) reports its parameters as they are
    return layer.num_params() if layer.named_children() else params_without_sharing(layer, out)


def _row(record, batch_size: int, itemsize: int) -> dict:
    layer, out = record.layer, record.output_shape
    leaf = record.kind == "leaf"
    activations = math.prod(out)   # a Python int: no int64 wrap on huge volumes
    counted = record.kind != "leaf" or not isinstance(layer, IN_PLACE)
    field = record.field
    return {
        "name": record.path or type(layer).__name__,
        "type": "Input" if record.is_input else type(layer).__name__,
        "output": volume(out),
        "shape": tuple(out),
        **(_hyper(layer) if leaf else dict.fromkeys(("F", "S", "P", "K", "dilation"))),
        "params": layer.num_params() if leaf else 0,
        "params_no_sharing": _no_sharing(layer, out) if leaf else 0,
        "macs": layer_macs(layer, out) if leaf else 0,
        "activations": activations,
        "memory": activations * batch_size * itemsize if counted else 0,
        "receptive_field": field.size if field else None,
        "jump": field.jump if field else None,
        "ceil": _ceil_note(record) if leaf else None,
    }


class Summary:
    """The table ``summary`` returns: print it, or read ``rows`` and ``totals``.

    Attributes:
        rows: one dict per layer (and per Residual sum / Concat join), in order, with
            keys name, type, output, shape, F, S, P, K, dilation, params,
            params_no_sharing, macs, activations, memory (bytes for the batch),
            receptive_field and jump ((H, W) pairs; None where they do not apply).
        totals: params, trainable_params, macs and flops (2 per multiply-add) per example,
            activations (per example, as counted for memory), activation_mb, param_mb,
            batch_size, input_shape, output_shape.
    """

    COLUMNS = (("name", "layer"), ("type", "type"), ("output", "output"), ("F", "F"),
               ("S", "S"), ("P", "P"), ("K", "K"), ("dilation", "D"), ("params", "params"),
               ("params_no_sharing", "no sharing"), ("macs", "MACs"), ("memory", "memory"),
               ("receptive_field", "RF"), ("jump", "jump"))

    def __init__(self, rows: list[dict], totals: dict) -> None:
        self.rows, self.totals = rows, totals

    def _cells(self, row) -> list[str]:
        cells = []
        for key, _ in self.COLUMNS:
            value = row[key]
            if key in ("F", "S", "P", "dilation", "receptive_field", "jump"):
                cells.append(_pair_text(value))
            elif key == "memory":
                cells.append(f"{value / MIB:.2f} MiB" if value else "")
            elif key == "type" and row.get("ceil"):
                cells.append(f"{value} (ceil)")
            elif isinstance(value, int) and key != "K":
                cells.append(f"{value:,}" if value else "")
            else:
                cells.append("" if value is None else str(value))
        return cells

    def total_lines(self) -> list[str]:
        t = self.totals
        return [
            (f"input {volume(t['input_shape'])} -> output {volume(t['output_shape'])}, "
             f"batch size {t['batch_size']}"),
            (f"parameters: {t['params']:,} ({t['trainable_params']:,} trainable), "
             f"{t['param_mb']:.2f} MiB"),
            (f"forward multiply-adds: {t['macs']:,} ({t['macs'] / 1e9:.2f} G, "
             f"{t['flops'] / 1e9:.2f} GFLOP) per example"),
            (f"activations: {t['activations']:,} per example, {t['activation_mb']:.2f} MiB "
             "for the batch (forward)"),
        ] + self._ceil_lines()

    def _ceil_lines(self) -> list[str]:
        rounded = [r for r in self.rows if r.get("ceil")]
        if not rounded:
            return []
        return [(f"(ceil): output size rounded up (ceil mode), e.g. {rounded[0]['name']}: "
                 f"{rounded[0]['ceil']}")]

    def __str__(self) -> str:
        header = [title for _, title in self.COLUMNS]
        body = [self._cells(r) for r in self.rows]
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
        numeric = {i for i, (key, _) in enumerate(self.COLUMNS)
                   if key not in ("name", "type", "output")}

        def fmt(line):
            return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip()
        rule = "-" * len(fmt(header))
        return "\n".join([fmt(header), rule] + [fmt(b) for b in body] + [rule] + self.total_lines())

    __repr__ = __str__

    def to_markdown(self) -> str:
        """A Markdown table followed by the totals as a list."""
        header = [title for _, title in self.COLUMNS]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        return "\n".join(lines + [""] + [f"- {line}" for line in self.total_lines()]) + "\n"

    def to_json(self, indent: int | None = None) -> str:
        """Rows and totals as JSON (pairs become two-element lists)."""
        return json.dumps({"rows": self.rows, "totals": self.totals}, indent=indent)


def summary(net: Layer, input_shape, batch_size: int = 1, strict: bool = False) -> Summary:
    """The lecture's shape, parameter, cost and receptive-field table for ``net``.

    Args:
        net: any volnet layer or container (a zoo model, a Sequential...).
        input_shape: per-example input shape, e.g. (3, 227, 227) (no batch axis).
        batch_size: examples per batch, for the activation memory.
        strict: raise a ShapeError naming the layer and showing (W - F + 2P)/S + 1
            wherever a CONV or POOL window does not tile its input exactly.

    Returns:
        A :class:`Summary`; ``print`` it, or read ``.rows`` / ``.totals``.

    Example:
        >>> import volnet as vn
        >>> net = vn.Sequential(vn.Conv2d(3, 96, 11, stride=4), vn.ReLU())
        >>> row = summary(net, (3, 227, 227)).rows[1]
        >>> row["output"], row["params"], row["params_no_sharing"], row["receptive_field"]
        ('55x55x96', 34944, 105705600, (11, 11))
    """
    if not isinstance(net, Layer):
        raise ConfigError(f"summary needs a volnet Layer, got {type(net).__name__}")
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    records = walk(net, input_shape, strict=strict)
    dtype = next((p.dtype for _, p, _ in net.named_params()), np.dtype(np.float32))
    itemsize = np.dtype(dtype).itemsize
    rows = [_row(r, int(batch_size), itemsize) for r in records if r.kind != "end"]
    params = net.num_params()
    counted = sum(r["memory"] for r in rows) // (int(batch_size) * itemsize)
    totals = {
        "params": params,
        "trainable_params": net.num_params(trainable_only=True),
        "macs": sum(r["macs"] for r in rows),
        "flops": 2 * sum(r["macs"] for r in rows),   # a multiply-add is two floating-point ops
        "activations": counted,
        "activation_mb": counted * int(batch_size) * itemsize / MIB,
        "param_mb": params * itemsize / MIB,
        "batch_size": int(batch_size),
        "input_shape": records[0].output_shape,
        "output_shape": records[-1].output_shape,
    }
    return Summary(rows, totals)
