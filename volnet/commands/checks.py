"""Checks before work: the data a command is given must be what the checkpoint was trained on.

``evaluate``, ``predict``, ``finetune`` and ``slide`` call these before any
computation, so an MNIST LeNet is never "evaluated" on a 3-class RGB folder:
the error names what the checkpoint records and what the data gives.
"""

from __future__ import annotations

import os
import shlex

import numpy as np

from volnet.errors import CheckpointError, ConfigError, ShapeError


def positive_int(option: str):
    """An argparse type for ``option`` that refuses 0 and negatives by the option's name."""
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} takes a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} must be at least 1, got {value}")
        return value
    return parse


def shape_text(shape) -> str:
    """(1, 28, 28) -> '1x28x28 (C x H x W)'."""
    return "x".join(str(int(s)) for s in shape) + " (C x H x W)"


def recorded_shape(path: str, prep: dict) -> tuple[int, ...]:
    """The input shape a checkpoint records, or a CheckpointError saying how to record it."""
    shape = tuple(int(s) for s in (prep.get("input_shape") or ()))
    if len(shape) != 3:
        raise CheckpointError(
            f"{path} records no input shape, so new images cannot be prepared for it. "
            "vn.fit and Trainer.fit record it; otherwise save with "
            "vn.save(path, net, preprocessing={'input_shape': [C, H, W], 'mean': [...], "
            "'std': [...], 'class_names': [...]})")
    return shape


def num_outputs(net, shape, path: str) -> int:
    """Number of class scores the net gives for one image of ``shape``."""
    try:
        out = net.output_shape(tuple(shape))
    except ShapeError as err:
        raise CheckpointError(f"{path}: its network does not accept the input shape it "
                              f"records, {shape_text(shape)}: {err}") from None
    return int(out[0])


def _default_names(names) -> bool:
    return [str(n) for n in names] == [str(i) for i in range(len(names))]


def check_classes(path: str, prep: dict, n_outputs: int, data_classes, where: str,
                  data: str | None = None) -> list[str]:
    """Refuse data whose classes differ from the checkpoint's; return the class names to print.

    The refusal ends with the ``volnet finetune`` command that adapts the net to ``data``
    (a folder of class sub-folders, which is what finetune reads; else ``DIR``).
    """
    names = [str(n) for n in (prep.get("class_names") or [])]
    if names and len(names) != n_outputs:
        raise CheckpointError(f"{path} records {len(names)} class names for a network with "
                              f"{n_outputs} outputs; the file is inconsistent")
    names = names or [str(i) for i in range(n_outputs)]
    if data_classes is None:
        return names
    data_classes = [str(c) for c in data_classes]
    if len(data_classes) != n_outputs or (
            not _default_names(names) and not _default_names(data_classes)
            and data_classes != names):
        raise ConfigError(
            f"{path} was trained on {n_outputs} classes ({_list(names)}); {where} has "
            f"{len(data_classes)} classes ({_list(data_classes)}). Use data with the "
            f"checkpoint's classes, or adapt the net to these classes with: "
            f"{_finetune_command(path, data)}")
    return names


def _finetune_command(path: str, data: str | None) -> str:
    folder = data if data and os.path.isdir(data) and not _mnist_format(data) else None
    command = f"volnet finetune {shlex.quote(path)} --data {shlex.quote(folder or 'DIR')}"
    return command if folder else command + " (DIR: a folder of <class>/ image sub-folders)"


def _mnist_format(folder: str) -> bool:
    return any(name.endswith(("-ubyte", "-ubyte.gz", ".bin")) for name in os.listdir(folder))


def check_shape(path: str, trained, given, where: str) -> None:
    """Refuse images whose (C, H, W) differ from the training images'."""
    if tuple(int(s) for s in trained) != tuple(int(s) for s in given):
        raise ShapeError(f"{path} was trained on images of {shape_text(trained)}; {where} gives "
                         f"{shape_text(given)}")


def check_normalisation(path: str, prep: dict, channels: int) -> None:
    """Refuse a recorded mean/std whose channel count differs from the images'."""
    for key in ("mean", "std"):
        value = prep.get(key)
        if value is not None and np.size(value) not in (1, channels):
            raise CheckpointError(f"{path} records a {key} of {np.size(value)} values for "
                                  f"{channels}-channel images; the file is inconsistent")


def _list(names, limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
