"""`volnet train`, `evaluate`, `predict` end to end on a small MNIST-format folder."""

import contextlib
import io
import os

import numpy as np
import pytest
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.data import load_mnist_sample, write_idx


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """600 training and 200 held-out real digits from the bundled sample, in IDX files."""
    folder = tmp_path_factory.mktemp("digits")
    data = load_mnist_sample()
    for split, x, y in (("train", data.x_train[:600], data.y_train[:600]),
                        ("t10k", data.x_test[:200], data.y_test[:200])):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", x[:, 0], compress=True)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y)
    return folder


def train_args(digits, out, *extra):
    return ["train", "lenet5", "--data", str(digits), "--epochs", "2", "--batch-size", "32",
            "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """Two epochs of `volnet train lenet5` on the small folder: (checkpoint, stdout)."""
    out = tmp_path_factory.mktemp("run") / "lenet.safetensors"
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(train_args(digits, out)) == 0
    return out, capture.getvalue()


def test_train_evaluate_predict(digits, trained, tmp_path, capsys):
    out, text = trained
    assert f"checkpoint saved to {out}" in text and "held-out accuracy" in text
    accuracy = float(text.split("held-out accuracy ")[1].split()[0])
    assert accuracy > 0.6                                  # 2 epochs on 600 digits; chance 0.1
    net = vn.load(out)
    assert net.preprocessing["input_shape"] == [1, 28, 28] and net.preprocessing["class_names"][3] == "3"

    assert main(["evaluate", str(out), "--data", str(digits)]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {accuracy:.4f}" in text and "rows: true class" in text
    rows = [line.split()[1:] for line in text.splitlines()[-10:]]
    assert sum(int(c) for row in rows for c in row) == 200   # the confusion matrix counts all

    data = load_mnist_sample()
    paths = []
    for i in range(3):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(data.x_test[i, 0]).resize((56, 56)).convert("RGB").save(path)
        paths.append(str(path))
    assert main(["predict", str(out), *paths, "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(len(line.split(": ")[1].split(", ")) == 2 for line in lines)


def test_existing_output_is_not_overwritten(digits, tmp_path, capsys):
    out = tmp_path / "taken.safetensors"
    out.write_bytes(b"precious")
    assert main(train_args(digits, out)) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"


def test_resume_continues_to_the_same_weights(digits, trained, tmp_path):
    full, part = trained[0], tmp_path / "part.safetensors"
    assert main(train_args(digits, part)[:-1] + ["--epochs", "1", "--quiet"]) == 0
    assert main(train_args(digits, part, "--resume", str(part))) == 0
    a, b = vn.load(full).state_dict(), vn.load(part).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_model_that_does_not_fit_the_data(digits, tmp_path, capsys):
    assert main(["train", "cifar_example", "--data", str(digits), "--out",
                 str(tmp_path / "x.safetensors"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cifar_example" in err and "(1, 28, 28)" in err and not os.listdir(tmp_path)


def test_unknown_model_and_missing_data(tmp_path, capsys):
    assert main(["train", "lenet6", "--quiet"]) == 2
    assert "choose one of" in capsys.readouterr().err
    assert main(["train", "lenet5", "--data", str(tmp_path), "--quiet"]) == 2
    assert "MNIST-format" in capsys.readouterr().err


def test_ctrl_c_stops_after_the_batch_and_resume_is_exact(digits, trained, tmp_path, monkeypatch,
                                                          capsys):
    import signal

    from volnet.train.trainer import Trainer

    real_step = Trainer._train_step

    def step_then_interrupt(self, xb, yb):
        result = real_step(self, xb, yb)
        if self.step == 25:                      # inside epoch 2 (19 batches per epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return result

    out = tmp_path / "cut.safetensors"
    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    assert main(train_args(digits, out)) == 130   # Ctrl-C is not a success, as in a shell
    assert "--resume" in capsys.readouterr().out
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    state = vn.io.checkpoint.load_checkpoint(out).trainer_state
    assert (state["epoch"], state["batch"], state["step"]) == (1, 6, 25)
    assert main(train_args(digits, out, "--resume", str(out))) == 0
    a, b = vn.load(trained[0]).state_dict(), vn.load(out).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_colour_models_train_on_a_cifar_folder(tmp_path, capsys):
    from volnet.data.cifar10 import RECORD

    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1.bin", 40), ("test_batch.bin", 20)):
        raw = rng.integers(0, 256, (n, RECORD), dtype=np.uint8)
        raw[:, 0] = np.arange(n) % 10
        raw.tofile(tmp_path / name)
    for model in ("cifar_example", "lenet5"):             # lenet5 adapts to 3x32x32
        out = tmp_path / f"{model}.safetensors"
        assert main(["train", model, "--data", str(tmp_path), "--epochs", "1", "--out", str(out),
                     "--quiet"]) == 0
        net = vn.load(out)
        assert net.preprocessing["input_shape"] == [3, 32, 32]
        assert net.preprocessing["class_names"][0] == "airplane"
        assert main(["evaluate", str(out), "--data", str(tmp_path)]) == 0
        assert "truck" in capsys.readouterr().out
