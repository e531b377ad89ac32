"""THE preprocessing rule of ``predict``, ``evaluate``, ``slide`` and ``finetune``.

A checkpoint records how its network's inputs were made (``volnet train`` and ``finetune``
write it; ``volnet import --mean --std --scale`` and ``export_onnx``'s metadata carry it).
Every command feeds images the way the checkpoint records. A checkpoint that records nothing
(an ONNX file imported without ``--mean/--std``) is fed ``pixels / 255`` with no mean or std,
and the command says so once, with the command that records another preprocessing; no
command guesses ImageNet's statistics or anything else.

Recorded fields: ``scale`` (what pixels are multiplied by first: ``"x / 255"``, ``"x * S"``
or a number; ``"as given"`` when ``vn.fit`` trained on already-normalised arrays, which image
files cannot reproduce: fed ``pixels / 255`` and said), ``mean`` and ``std`` (per channel, on
that scale).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

import numpy as np

from volnet.errors import CheckpointError, ConfigError

DEFAULT_SCALE = 1 / 255


@dataclass
class Preprocessing:
    """How a command turns uint8 pixels into the network's input.

    ``mean``/``std`` are on the 0-1 scale, what :class:`~volnet.data.batches.BatchIterator`
    takes (a recorded ``scale`` other than 1/255 is folded into them); ``record`` is the
    same preprocessing as a checkpoint stores it.
    """

    mean: list[float] | None
    std: list[float] | None
    record: dict
    recorded: bool


def parse_scale(value) -> float:
    """``"x / 255"``, ``"x * 0.5"``, ``"1/255"``, ``"1"`` or a number -> the factor.

    Example:
        >>> parse_scale("x / 255") == 1 / 255, parse_scale("1"), parse_scale("x * 2")
        (True, 1.0, 2.0)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        factor = float(value)
    else:
        text = str(value).replace(" ", "")
        match = re.fullmatch(r"(?:x)?([*/])?([0-9.eE+-]+)(?:/([0-9.eE+-]+))?", text)
        try:
            if match is None:
                raise ValueError(text)
            op, number, divisor = match.groups()
            factor = float(number) / (float(divisor) if divisor else 1.0)
            if op == "/":
                factor = 1.0 / factor
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"scale {value!r} is not a factor such as 1/255, 1 or 0.5 "
                              "(pixels are multiplied by it)") from None
    if not np.isfinite(factor) or factor <= 0:
        raise ConfigError(f"scale {value!r} must be a positive number")
    return factor


def scale_text(factor: float) -> str:
    """How a checkpoint records the factor: ``"x / 255"`` for 1/255, else ``"x * S"``."""
    return "x / 255" if abs(factor * 255 - 1) < 1e-12 else f"x * {factor!r}"


def is_recorded(prep: dict) -> bool:
    """Whether a checkpoint's preprocessing says how inputs were made (not just their shape)."""
    return any(prep.get(key) is not None for key in ("scale", "mean", "std"))


def from_record(prep: dict, channels: int, source: str) -> Preprocessing:
    """The recorded preprocessing, checked against the images' channel count."""
    factor = parse_scale(prep["scale"]) if prep.get("scale") is not None else DEFAULT_SCALE
    stats = {}
    for key in ("mean", "std"):
        value = prep.get(key)
        if value is not None:
            value = np.asarray(value, dtype=np.float64).reshape(-1)
            fix = (f"give one value, or one per channel ({channels})" if source.startswith("--")
                   else "the file is inconsistent")       # an option, or a checkpoint's record
            if value.size not in (1, channels):
                raise CheckpointError(f"{source} records a {key} of {value.size} values for "
                                      f"{channels}-channel images; {fix}")
            if not np.isfinite(value).all():
                raise CheckpointError(f"{source} records a {key} of {value.tolist()}: every "
                                      f"value must be a finite number; "
                                      + ("give finite numbers" if source.startswith("--")
                                         else "the file is inconsistent"))
        stats[key] = value
    mean, std = stats["mean"], stats["std"]
    if mean is None and std is None and factor == DEFAULT_SCALE:
        zero_one = (None, None)
    else:
        # (x s - m) / d == (x / 255 - m / (255 s)) / (d / (255 s)): one 0-1 scale for all
        ratio = 255 * factor
        mean = np.zeros(1) if mean is None else mean
        std = np.ones(1) if std is None else std
        if (std <= 0).any():
            raise CheckpointError(f"{source} records a std of {std.tolist()}; it must be > 0")
        zero_one = ((mean / ratio).tolist(), (std / ratio).tolist())
    record = {"scale": scale_text(factor),
              "mean": None if stats["mean"] is None else stats["mean"].tolist(),
              "std": None if stats["std"] is None else stats["std"].tolist()}
    return Preprocessing(*zero_one, record=record, recorded=is_recorded(prep))


def for_checkpoint(prep: dict, channels: int, source: str, command: str) -> Preprocessing:
    """THE rule: the recorded preprocessing, else ``pixels / 255`` said once on stderr."""
    if prep.get("scale") == "as given":
        print(f"volnet {command}: note: {source} was trained on arrays taken as given (already "
              "normalised), which image files cannot reproduce; feeding pixels / 255 with its "
              "recorded mean and std. Retrain on 0-1 or uint8 images with mean=, std= for a "
              "checkpoint that records how to feed it", file=sys.stderr)
        return from_record({**prep, "scale": None}, channels, source)
    if is_recorded(prep):
        return from_record(prep, channels, source)
    print(f"volnet {command}: note: {source} records no preprocessing; feeding pixels / 255 "
          "with no mean or std. If the model was trained on other inputs, record them: volnet "
          "import MODEL.onnx --mean M --std S [--scale 1/255] (per-channel values as "
          "0.485,0.456,0.406)", file=sys.stderr)
    return from_record({}, channels, source)


def checkpoint_preprocessing(weights) -> dict | None:
    """The preprocessing a volnet checkpoint given as ``--weights`` records ({} when it
    records none); None for other weight files (torchvision's, safetensors of others)."""
    import os

    if not str(weights).endswith(".safetensors") or not os.path.isfile(weights):
        return None
    from volnet.io.safetensors import load_file

    _, metadata = load_file(weights)
    if metadata.get("format") != "volnet-checkpoint":
        return None
    from volnet.io.checkpoint import load_checkpoint

    return dict(load_checkpoint(weights).preprocessing or {})
