"""Preprocessing that travels with an ONNX file: the input shape, pixel scale, mean, std and
class names as ``metadata_props`` (JSON values under ``volnet.*`` keys), written by ``export_onnx`` and
read back by ``load_onnx``. Without them a model run in onnxruntime on ``x / 255`` gives
wrong classes with no hint why."""

from __future__ import annotations

import json

from volnet.errors import CheckpointError
from volnet.limits import loads_json

PREPROCESSING_KEYS = ("input_shape", "scale", "mean", "std", "class_names")


def preprocessing_props(preprocessing: dict, input_shape) -> dict[str, str]:
    """``metadata_props`` entries telling any runtime how to feed the network.

    Example:
        >>> preprocessing_props({"mean": [0.5], "std": [0.25]}, (1, 28, 28))["volnet.mean"]
        '[0.5]'
    """
    prep = {"input_shape": list(input_shape), **{k: v for k, v in (preprocessing or {}).items()
                                                if k in PREPROCESSING_KEYS and v is not None}}
    props = {f"volnet.{k}": json.dumps(list(v) if isinstance(v, tuple) else v)
             for k, v in prep.items()}
    if prep.get("mean") is not None or prep.get("scale") not in (None, "x / 255"):
        scale = prep.get("scale") or "x / 255"
        pixels = "pixels / 255" if scale == "x / 255" else f"pixels as {scale}"
        props["volnet.preprocessing"] = (f"{pixels}, then (x - mean) / std per channel, "
                                         "NCHW float32")
    return props


def read_preprocessing(model) -> dict:
    """The preprocessing recorded in an ``onnx.ModelProto``'s ``metadata_props``."""
    props = {p.key: p.value for p in model.metadata_props}
    prep = {}
    for key in PREPROCESSING_KEYS:
        text = props.get(f"volnet.{key}")
        if text is None:
            continue
        prep[key] = loads_json(text, f"metadata_props volnet.{key} ({text[:80]!r})",
                               CheckpointError)   # depth-bounded: the file may be hostile
    return prep
