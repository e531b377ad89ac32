"""The real-topology corpus: Caffe2-style opset-9 graphs (corpus_caffe2.py),
torch.onnx.export(..., dynamo=False) files at opsets 13-17 (corpus_torch.py), and today's
families (corpus_families.py) exported at opsets 11, 13 and 17, with the input each runs on
and whether it is one of the slow (``@slow``) members.

``python tests/io/onnx_corpus.py`` prints the README's corpus table (family | source |
opset | max relative error of volnet vs onnxruntime)."""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))   # zoo_torch_refs

import corpus_caffe2 as C2
import corpus_families as F
import corpus_torch as T
from torch_nets import randomise

# id: (build, opset, input (C, H, W), slow)
TORCH = {
    "squeezenet1_0": (lambda: T.SqueezeNet("1_0"), 13, (3, 64, 64), False),
    "squeezenet1_1": (lambda: T.SqueezeNet("1_1"), 14, (3, 64, 64), False),
    "densenet121": (lambda: T.DenseNet121(growth=8, init=16, bn_size=2), 15, (3, 32, 32), True),
    "shufflenet_v2": (lambda: T.ShuffleNetV2(channels=(24, 48, 96, 192, 256)), 16, (3, 64, 64),
                      True),
    "mobilenet_v2": (lambda: T.MobileNetV2(width=2), 17, (3, 32, 32), False),
    "googlenet": (lambda: T.GoogLeNetMain(), 13, (3, 64, 64), True),
    "resnet50": (lambda: T.resnet50(widths=(16, 32, 64, 128)), 14, (3, 32, 32), False),
    "vgg19": (lambda: T.VGG19(width=8, hidden=64), 15, (3, 224, 224), True),
    "alexnet": (lambda: T.AlexNet(width=4, hidden=64), 16, (3, 224, 224), False),
}
CAFFE2 = {name: (build, C2.OPSET, None, name in ("densenet121", "inception_v2"))
          for name, build in C2.FAMILIES.items()}
WIDTHS = {"squeezenet1_0": "full", "squeezenet1_1": "full", "densenet121": "growth 8",
          "shufflenet_v2": "1/4 widths", "mobilenet_v2": "1/2 widths", "googlenet": "full",
          "resnet50": "1/4 widths", "vgg19": "1/8 widths, FC 64", "alexnet": "1/4 widths, FC 64"}


def family_model(name, opset) -> bytes:
    """The family exported at ``opset``, or by the dynamo exporter (``opset="dynamo"``: its
    defaults, opset 20 and a fixed batch of 1)."""
    build, shape, _ = F.FAMILIES[name]
    if opset != "dynamo":
        return _export(build, opset, shape)
    import logging

    torch.manual_seed(0)
    module = randomise(build())
    logging.disable(logging.WARNING)        # the exporter logs its progress
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (torch.zeros((1, *shape)),), dynamo=True,
                                        verbose=False)
    finally:
        logging.disable(logging.NOTSET)
    return program.model_proto.SerializeToString()


def opset_of(data: bytes) -> int:
    return next(o.version for o in onnx.load_from_string(data).opset_import
                if o.domain in ("", "ai.onnx"))


def torch_model(name) -> bytes:
    build, opset, shape, _ = TORCH[name]
    return _export(build, opset, shape)


def _export(build, opset, shape) -> bytes:
    torch.manual_seed(0)
    module = randomise(build())
    x = torch.zeros((1, *shape))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, x, buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}})
    return buffer.getvalue()


def caffe2_model(name) -> bytes:
    return CAFFE2[name][0]().SerializeToString()


def without_softmax(data: bytes) -> bytes:
    """The same graph ending at the scores that feed its final Softmax (if any)."""
    model = onnx.load_from_string(data)
    last = model.graph.node[-1]
    if last.op_type != "Softmax":
        return data
    model.graph.output[0].name = last.input[0]
    del model.graph.node[-1]
    return model.SerializeToString()


def input_shape(data: bytes) -> tuple[int, ...]:
    dims = onnx.load_from_string(data).graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value for d in dims[1:])


def ort_run(data: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def relative_error(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def measure(data: bytes, seed=0) -> float:
    """Max relative error of volnet vs onnxruntime on a random image, with and without the
    final softmax (scores show differences a saturated softmax hides)."""
    from volnet.io import load_onnx

    x = np.random.default_rng(seed).standard_normal((1, *input_shape(data))).astype(np.float32)
    worst = 0.0
    for variant in (data, without_softmax(data)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            net = load_onnx(onnx.load_from_string(variant))
        worst = max(worst, relative_error(net.forward(x), ort_run(variant, x)))
    return worst


def table() -> str:
    rows = ["| family | written as | opset | size | max relative error vs onnxruntime |",
            "| --- | --- | --- | --- | --- |"]
    for name in CAFFE2:
        rows.append(f"| {name} | Caffe2 style (onnx.helper) | {C2.OPSET} | narrowed, 224x224 "
                    f"| {measure(caffe2_model(name)):.1e} |")
    for name, (_, opset, shape, _) in TORCH.items():
        rows.append(f"| {name} | torch.onnx.export(dynamo=False) | {opset} | {WIDTHS[name]}, "
                    f"{shape[1]}x{shape[2]} | {measure(torch_model(name)):.1e} |")
    for name, (_, shape, narrowed) in F.FAMILIES.items():
        for opset in F.OPSETS:
            data = family_model(name, opset)
            rows.append(f"| {name} | torch.nn, torch.onnx.export(dynamo={opset == 'dynamo'}) | "
                        f"{opset_of(data)} | {narrowed}, {shape[1]}x{shape[2]} | "
                        f"{measure(data):.1e} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
