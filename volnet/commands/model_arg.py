"""One reading of a command's MODEL argument: a zoo name, an ``.onnx`` file or a volnet
checkpoint (``.safetensors``), so ``volnet summary`` (and the commands that take a model)
accept all three the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class ResolvedModel:
    """The network a MODEL argument names, with what came with it."""

    net: object
    input_shape: tuple[int, ...] | None
    preprocessing: dict = field(default_factory=dict)
    description: str = ""
    kind: str = "zoo"            # "zoo", "onnx" or "checkpoint"


def resolve_model(text: str, shapes_only: bool = False) -> ResolvedModel:
    """A zoo model name, an ONNX file or a volnet checkpoint -> :class:`ResolvedModel`.

    ``shapes_only=True`` builds a zoo model without drawing its weights
    (:func:`volnet.init.shapes_only`): enough for summaries, useless for running it.

    Raises:
        ConfigError: ``text`` is none of the three (the message lists the zoo names).
        CheckpointError: the file exists but cannot be read as ONNX or as a checkpoint.
    """
    from volnet.errors import ConfigError
    from volnet.models.registry import INPUT_SHAPES, MODELS, build

    if text in MODELS and not os.path.isfile(text):
        if shapes_only:
            from volnet.init import shapes_only as no_weights

            with no_weights():     # a summary needs shapes, not 138 M random weights
                net = build(text)
        else:
            net = build(text)
        return ResolvedModel(net, INPUT_SHAPES[text], {}, f"{text} (zoo)", "zoo")
    if os.path.isfile(text):
        if text.lower().endswith(".onnx"):
            from volnet.io.onnx.importer import load_onnx

            net = load_onnx(text)
            return ResolvedModel(net, tuple(net.input_shape), dict(net.preprocessing),
                                 f"ONNX file {text}", "onnx")
        from volnet.io.checkpoint import load

        net = load(text)
        prep = dict(getattr(net, "preprocessing", {}) or {})
        shape = tuple(prep["input_shape"]) if prep.get("input_shape") else None
        return ResolvedModel(net, shape, prep, f"checkpoint {text}", "checkpoint")
    raise ConfigError(f"{text!r} is neither a zoo model, an .onnx file nor a checkpoint file; "
                      f"zoo models: {', '.join(sorted(MODELS))}")
