"""The classic ImageNet families as ONNX files (Caffe2-style opset 9, and PyTorch exports at
opsets 13-17) and today's families (EfficientNet, MobileNet v3, RegNet-Y, ConvNeXt, GhostNet,
ResNeSt; PyTorch exports at opsets 11, 13, 17) import into volnet, equal onnxruntime within
1e-4 relative in float32, train one step with finite gradients, and go through ``volnet
import`` into ``volnet predict`` (and, for today's families, ``volnet finetune``)."""

import contextlib
import warnings

import numpy as np
import pytest
from corpus_families import FAMILIES, OPSETS
from onnx_corpus import (
    CAFFE2,
    TORCH,
    caffe2_model,
    family_model,
    input_shape,
    measure,
    torch_model,
    without_softmax,
)
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.io import load_onnx

CASES = [pytest.param("caffe2", name, marks=[pytest.mark.slow] if slow else [],
                      id=f"caffe2-{name}") for name, (_, _, _, slow) in CAFFE2.items()]
CASES += [pytest.param("torch", name, marks=[pytest.mark.slow] if slow else [],
                       id=f"torch-{name}") for name, (_, _, _, slow) in TORCH.items()]


@pytest.mark.parametrize("source, name", CASES)
def test_corpus_model_matches_onnxruntime_trains_and_imports(source, name, tmp_path, capsys):
    data = caffe2_model(name) if source == "caffe2" else torch_model(name)
    _check(data, name, "asymmetric pads|fixes the batch" if source == "caffe2" else None,
           tmp_path, capsys)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_onnxruntime_trains_imports_and_finetunes(name, opset, tmp_path, capsys):
    data = family_model(name, opset)
    # the dynamo exporter fixes the batch to 1: imported with a free batch axis, and said
    checkpoint = _check(data, name, "graph input 'x' fixes the batch to 1" if opset == "dynamo"
                        else None, tmp_path, capsys)
    if opset != 17:
        return
    shape = FAMILIES[name][1]
    rng = np.random.default_rng(3)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (shape[1], shape[2], 3), np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    tuned = tmp_path / "tuned.safetensors"
    assert main(["finetune", str(checkpoint), "--data", str(tmp_path / "data"), "--epochs", "1",
                 "--quiet", "--val-fraction", "0.5", "--out", str(tuned)]) == 0
    assert vn.load(tuned).output_shape(shape) == (2,)


def _check(data, name, warning, tmp_path, capsys):
    """onnxruntime parity, one training step, import -> predict; returns the checkpoint."""
    assert measure(data) < 1e-4          # float32, random image, with and without softmax

    path = tmp_path / f"{name}.onnx"
    path.write_bytes(data)
    with pytest.warns(UserWarning, match=warning) if warning else _user_warnings("error"):
        net = load_onnx(path)
    shape = input_shape(data)
    x = np.random.default_rng(1).standard_normal((2, *shape)).astype(np.float32)
    imported = net.forward(x[:1])

    # one training step on the scores (a final softmax is dropped, as fine-tuning does)
    (tmp_path / "scores.onnx").write_bytes(without_softmax(data))
    with _user_warnings("ignore"):
        net = load_onnx(tmp_path / "scores.onnx")
    out = net.forward(x, training=True)
    scores = out.reshape(len(x), -1)
    _, dscores = vn.softmax_cross_entropy(scores, np.array([1, 2]))
    net.backward(dscores.reshape(out.shape).astype(np.float32), input_grad=False)
    grads = [g for _, _, g in net.named_params()]
    assert grads and all(np.isfinite(g).all() for g in grads)
    assert any(np.abs(g).max() > 0 for g in grads)

    checkpoint = tmp_path / "net.safetensors"
    assert main(["import", str(path), "--out", str(checkpoint)]) == 0
    image = tmp_path / "image.png"
    pixels = np.random.default_rng(2).integers(0, 256, (shape[1], shape[2], 3), np.uint8)
    Image.fromarray(pixels).save(image)
    assert main(["predict", str(checkpoint), str(image), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"{image}: " in printed and "saved" in printed
    np.testing.assert_array_equal(vn.load(checkpoint).forward(x[:1]), imported)
    return checkpoint


@contextlib.contextmanager
def _user_warnings(action: str):
    with warnings.catch_warnings():
        warnings.simplefilter(action, UserWarning)
        yield


def test_readme_corpus_table_lists_every_family():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = [line for line in readme.splitlines() if "| Caffe2 style" in line
            or "| torch.onnx.export" in line or "| torch.nn, torch.onnx.export" in line]
    assert any("dynamo=True" in line for line in rows)
    listed = {line.split("|")[1].strip() + line.split("|")[2] + line.split("|")[3].strip()
              for line in rows}
    expected = {f"{name} Caffe2 style (onnx.helper) 9" for name in CAFFE2}
    expected |= {f"{name} torch.onnx.export(dynamo=False) {TORCH[name][1]}" for name in TORCH}
    expected |= {f"{name} torch.nn, torch.onnx.export(dynamo={opset == 'dynamo'}) "
                 f"{20 if opset == 'dynamo' else opset}" for name in FAMILIES for opset in OPSETS}
    assert listed == expected
    errors = [float(line.split("|")[5]) for line in rows]
    assert max(errors) < 1e-4      # the measured errors the README reports meet the bound
