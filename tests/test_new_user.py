"""Issue 15: what a new user met in the Python API and the CLI, one regression test per item
(item 1, the optimizer API, is in tests/train/test_optimizer_api.py and the README test;
item 9, summaries without weights, in tests/tools/test_summary_no_weights.py)."""

import contextlib
import io

import numpy as np
import pytest
from new_user_data import SHAPES, make_shapes_folder
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.data import load_mnist_sample, write_idx
from volnet.data.registry import load_dataset
from volnet.train.evaluation import evaluate


def small_net(in_channels=3, classes=3, size=16, seed=0):
    return vn.Sequential(vn.Conv2d(in_channels, 8, 3, padding=1, rng=seed), vn.ReLU(),
                         vn.MaxPool2d(2), vn.Flatten(),
                         vn.Linear(8 * (size // 2) ** 2, classes, rng=seed + 1))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def shapes_data(shapes):
    return load_dataset(str(shapes), (3, 16, 16))


@pytest.fixture(scope="module")
def shapes_checkpoint(shapes_data, tmp_path_factory):
    """A network written in Python, trained with vn.fit and saved with vn.save."""
    d = shapes_data
    net = small_net()
    vn.fit(net, d.x_train, d.y_train, epochs=4, batch_size=16, optimizer=vn.Adam(lr=3e-3),
           mean=d.mean, std=d.std, class_names=d.class_names, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "shapes.safetensors"
    vn.save(path, net)
    return path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """400 training and 100 held-out real digits in MNIST's IDX format."""
    folder = tmp_path_factory.mktemp("digits")
    data = load_mnist_sample()
    for split, x, y in (("train", data.x_train[:400], data.y_train[:400]),
                        ("t10k", data.x_test[:100], data.y_test[:100])):
        write_idx(folder / f"{split}-images-idx3-ubyte", x[:, 0])
        write_idx(folder / f"{split}-labels-idx1-ubyte", y)
    return folder


@pytest.fixture(scope="module")
def lenet_cli(digits, tmp_path_factory):
    """One quiet epoch of `volnet train lenet5` on the digit folder: (checkpoint, stderr)."""
    out = tmp_path_factory.mktemp("lenet") / "lenet.safetensors"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "lenet5", "--data", str(digits), "--epochs", "1",
                     "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    return out, err.getvalue()


def test_item2_fit_normalises_val_like_x_and_takes_uint8(shapes_data):
    d = shapes_data
    net = small_net()
    val = (d.x_train[:45], d.y_train[:45])                   # uint8, as x is
    history = vn.fit(net, d.x_train, d.y_train, epochs=2, batch_size=16, mean=d.mean,
                     std=d.std, val=val, optimizer=vn.Adam(lr=3e-3), progress=False)
    by_hand = (d.x_train[:45] / 255 - np.reshape(d.mean, (1, 3, 1, 1))) / np.reshape(
        d.std, (1, 3, 1, 1))
    expected = evaluate(net, by_hand.astype(np.float32), d.y_train[:45])
    assert history["val_accuracy"][-1] == pytest.approx(expected["accuracy"])
    assert history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-5)
    # float images on the 0-1 scale are the same data as uint8 / 255
    again = vn.fit(small_net(), d.x_train, d.y_train, epochs=2, batch_size=16, mean=d.mean,
                   std=d.std, val=(d.x_train[:45] / np.float32(255), d.y_train[:45]),
                   optimizer=vn.Adam(lr=3e-3), progress=False)
    assert again["val_accuracy"][-1] == pytest.approx(history["val_accuracy"][-1])


def test_item3_evaluate_refuses_data_that_does_not_fit(shapes_checkpoint, digits, tmp_path,
                                                        capsys):
    assert main(["evaluate", str(shapes_checkpoint), "--data", str(digits)]) == 2
    err = capsys.readouterr().err
    assert "3x16x16" in err and "1x28x28" in err
    mnist_like = small_net(1, 10, 28)
    x, y = load_mnist_sample().x_train[:64], load_mnist_sample().y_train[:64]
    vn.fit(mnist_like, x, y, epochs=1, progress=False)
    vn.save(tmp_path / "digits.safetensors", mnist_like)
    four = make_shapes_folder(tmp_path / "four", (4, 2), shapes=SHAPES + ("bar",))
    assert main(["evaluate", str(tmp_path / "digits.safetensors"), "--data", str(four)]) == 2
    err = capsys.readouterr().err
    assert "10 classes" in err and "4 classes" in err and "circle" in err


def test_item4_checkpoints_written_from_python_work_with_the_cli(shapes_checkpoint, shapes,
                                                                 shapes_data, capsys):
    prep = vn.load(shapes_checkpoint).preprocessing
    assert prep["input_shape"] == [3, 16, 16] and prep["class_names"] == list(SHAPES)
    assert prep["mean"] == pytest.approx(shapes_data.mean, abs=1e-6)
    image = str(shapes / "test" / "square" / "000.png")
    assert main(["predict", str(shapes_checkpoint), image]) == 0
    assert capsys.readouterr().out.split(": ")[1].split(" ")[0] in SHAPES
    # the Trainer path records the batches' preprocessing too
    d = shapes_data
    net = small_net()
    trainer = vn.Trainer(net, vn.SGD(lr=0.01), progress=False)
    trainer.fit(vn.data.BatchIterator(d.x_train, d.y_train, 32, mean=d.mean, std=d.std), 1)
    assert trainer.metadata["preprocessing"]["std"] == pytest.approx(d.std, abs=1e-6)
    assert net.preprocessing["input_shape"] == [3, 16, 16]


def test_item5_finetune_takes_train_test_folders_and_volnet_train_checkpoints(
        lenet_cli, shapes, tmp_path, capsys):
    checkpoint, _ = lenet_cli
    out = tmp_path / "ft.safetensors"
    # a folder with train/ and test/ (volnet train's layout), a checkpoint of volnet train as
    # --weights, 1-channel input: no ImageNet normalisation gets in the way
    assert main(["finetune", "lenet5", "--weights", str(checkpoint), "--data", str(shapes),
                 "--input", "1x28x28", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy (30 images)" in printed
    tuned, trained = vn.load(out), vn.load(checkpoint)
    np.testing.assert_array_equal(tuned[0].params["weight"], trained[0].params["weight"])
    assert tuned.preprocessing["mean"] == trained.preprocessing["mean"]      # MNIST's, kept
    assert tuned.preprocessing["class_names"] == list(SHAPES)
    assert main(["finetune", "lenet5", "--weights", str(checkpoint), "--data", str(shapes),
                 "--input", "3x32x32", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "1x28x28" in err and "3x32x32" in err


def test_item6_predict_frames_a_digit_photo_as_mnist_did(tmp_path, capsys):
    from volnet.commands.predict import digit_input
    from volnet.data.images import load_image

    data = load_mnist_sample()
    digit = data.x_test[0, 0]
    ink = 255 - np.asarray(Image.fromarray(digit).resize((24, 24), Image.BILINEAR))
    canvas = np.full((120, 120), 255, np.uint8)                  # dark ink on white paper,
    canvas[4:28, 90:114] = ink                                    # small, in a corner
    Image.fromarray(canvas).save(tmp_path / "seven.png")
    framed, inverted = digit_input(str(tmp_path / "seven.png"))
    naive = load_image(str(tmp_path / "seven.png"), (1, 28, 28))

    def similarity(a):
        a, b = a.reshape(-1).astype(float), digit.reshape(-1).astype(float)
        return np.corrcoef(a, b)[0, 1]
    assert inverted and similarity(framed) > 0.8 and similarity(naive) < 0.2
    # through the CLI, with a checkpoint trained on the MNIST sample
    net = small_net(1, 10, 28)
    vn.fit(net, data.x_train[:256], data.y_train[:256], epochs=1, progress=False)
    ckpt = vn.save(tmp_path / "m.safetensors", net,
                   preprocessing={**net.preprocessing, "dataset": "mnist-sample"})
    assert main(["predict", ckpt, str(tmp_path / "seven.png")]) == 0
    assert "light background: inverted" in capsys.readouterr().out


def test_item7_errors_name_the_problem_not_a_symptom(tmp_path, capsys):
    text = tmp_path / "notes.safetensors"
    text.write_text("these are my notes, not a checkpoint\n" * 4)
    for command in (["evaluate", str(text)], ["predict", str(text), str(text)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "not a safetensors file" in err and "bytes, more than" not in err
    for value in ("0", "-1"):
        with pytest.raises(SystemExit) as stop:
            main(["train", "lenet5", "--epochs", value])
        assert stop.value.code == 2
        assert f"--epochs must be at least 1, got {value}" in capsys.readouterr().err


def test_item8_install_hints_work_from_a_checkout(monkeypatch):
    import sys

    from volnet.io._optional import MissingDependencyError, require

    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError) as err:
        require("onnx", "onnx", "ONNX export")
    assert "pip install 'volnet[onnx]'" in str(err.value)
    assert "pip install '.[onnx]'" in str(err.value)       # what works in a clone
    readme = (__import__("pathlib").Path(__file__).parents[1] / "README.md").read_text()
    assert "pip install '.[onnx]'" in readme and "pip install '.[mpi]'" in readme


def test_item10_summary_says_ceil_mode_and_mib(capsys):
    assert main(["summary", "googlenet"]) == 0
    out = capsys.readouterr().out
    assert "MaxPool2d (ceil)" in out and "(112 - 3 + 2*0)/2 + 1 = 55.5 -> 56" in out
    assert " MiB" in out and " MB" not in out


def test_item10_confusion_matrix_header_keeps_names_apart(shapes_checkpoint, shapes, capsys):
    assert main(["evaluate", str(shapes_checkpoint), "--data", str(shapes)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[2]
    assert header.split() == list(SHAPES)
    counts = [int(c) for line in out.splitlines()[3:6] for c in line.split()[1:]]
    assert sum(counts) == 30


def test_item10_quiet_keeps_the_epoch_lines(lenet_cli):
    _, err = lenet_cli
    assert "epoch 1:" in err and "val_accuracy" in err and "batch/s" not in err


def test_item10_evaluate_elsewhere_suggests_data(shapes_checkpoint, tmp_path, shapes, capsys):
    ckpt = vn.load(shapes_checkpoint)
    moved = vn.save(tmp_path / "moved.safetensors", ckpt,
                    preprocessing={**ckpt.preprocessing, "dataset": "shapes"})
    assert main(["evaluate", moved]) == 2
    err = capsys.readouterr().err
    assert "'shapes'" in err and "--data" in err and "unknown dataset" not in err
    assert main(["evaluate", moved, "--data", str(shapes)]) == 0


def test_item10_slide_takes_weights_and_prints_imagenet_names(tmp_path, capsys):
    from volnet.io.safetensors import serialize

    state = vn.models.resnet18(seed=3).state_dict()
    state["fc.weight"][...] = 0
    state["fc.bias"][...] = 0
    state["fc.bias"][[281, 207]] = (5.0, 4.0)                    # tabby, golden retriever
    (tmp_path / "r18.safetensors").write_bytes(serialize(dict(state)))
    Image.fromarray(np.full((224, 224, 3), 90, np.uint8)).save(tmp_path / "img.png")
    assert main(["slide", "resnet18", str(tmp_path / "img.png"), "--weights",
                 str(tmp_path / "r18.safetensors"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "ImageNet" in out and "tabby" in out and "golden retriever" in out
