"""`volnet summary MODEL`: the table, its options and its errors."""

import json

import numpy as np
import pytest

import volnet as vn
from volnet.cli import main


@pytest.fixture(autouse=True)
def lazy_init(monkeypatch):
    monkeypatch.setattr(vn.init, "he_normal", lambda s, r, dtype=np.float32: np.zeros(s, dtype))


def test_alexnet_table(capsys):
    assert main(["summary", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "55x55x96" in out and "105,705,600" in out and "60,965,224" in out


def test_input_markdown_batch_size(capsys):
    args = ["summary", "vgg16", "--input", "3x224x224", "--markdown", "--batch-size", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("| layer |") and "15,470,264,320" in out and "batch size 2" in out


def test_json_output(capsys):
    assert main(["summary", "resnet18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["params"] == 11_689_512


def test_strict_failure_exits_2_with_formula(capsys):
    assert main(["summary", "alexnet_torchvision", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "features.0" in err and "(W - F + 2P)/S + 1" in err and "55.25" in err


def test_unknown_model_and_bad_input(capsys):
    assert main(["summary", "vgg17"]) == 2
    assert "vgg16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["summary", "vgg16", "--input", "224x224"])
    assert "C x H x W" in capsys.readouterr().err
