"""``volnet import`` writes a checkpoint that vn.load, summary, predict, slide and finetune
accept; ``volnet summary`` reads a zoo name, an .onnx file or a checkpoint alike."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import volnet as vn
from volnet.cli import main
from volnet.io import export_onnx


class Small(nn.Module):
    """A chain (dense evaluation applies): conv, ReLU6, pool, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(6 * 8 * 8, 4)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture
def onnx_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Small().eval(), torch.zeros(1, 3, 16, 16), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    return path


def _image_folder(root, classes=("a", "b"), per_class=3):
    rng = np.random.default_rng(0)
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3), np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_import_then_every_command_accepts_the_checkpoint(onnx_file, tmp_path, capsys):
    out = tmp_path / "small.safetensors"
    assert main(["import", str(onnx_file), "--out", str(out)]) == 0
    assert "saved" in capsys.readouterr().out
    net = vn.load(out)
    assert net.preprocessing["input_shape"] == [3, 16, 16]

    for model in (str(onnx_file), str(out)):           # summary: file or checkpoint
        assert main(["summary", model]) == 0
        table = capsys.readouterr().out
        assert "features.0" in table and "classifier" in table and "16x16x3" in table
    images = _image_folder(tmp_path / "images")
    assert main(["predict", str(out), str(images / "a" / "0.png")]) == 0
    assert "0.png: " in capsys.readouterr().out
    assert main(["slide", str(out), str(images / "a" / "0.png"), "--top", "1"]) == 0
    assert "top classes" in capsys.readouterr().out
    tuned = tmp_path / "tuned.safetensors"
    assert main(["finetune", str(out), "--data", str(images), "--epochs", "1", "--quiet",
                 "--no-imagenet-norm", "--out", str(tuned)]) == 0
    assert vn.load(tuned).output_shape((3, 16, 16)) == (2,)


def test_import_refuses_to_overwrite_and_reports_bad_arguments(onnx_file, tmp_path, capsys):
    out = tmp_path / "small.safetensors"
    out.write_bytes(b"mine")
    assert main(["import", str(onnx_file), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(["summary", "no-such-model"]) == 2
    assert "neither a zoo model, an .onnx file nor a checkpoint" in capsys.readouterr().err
    assert main(["finetune", str(onnx_file), "--weights", "imagenet", "--data", "x"]) == 2
    assert "carries its own weights" in capsys.readouterr().err


def test_exported_preprocessing_reaches_the_checkpoint(tmp_path):
    net = vn.models.lenet5()
    path = export_onnx(net, tmp_path / "l.onnx", (1, 28, 28),
                       preprocessing={"mean": [0.5], "std": [0.25], "class_names": list("0123456789")})
    assert main(["import", str(path), "--out", str(tmp_path / "l.safetensors")]) == 0
    prep = vn.load(tmp_path / "l.safetensors").preprocessing
    assert prep == {"input_shape": [1, 28, 28], "mean": [0.5], "std": [0.25],
                    "class_names": list("0123456789")}
