"""THE preprocessing rule, through the command line: a PyTorch model trained on
``(x / 255 - 0.5) / 0.25``, exported to ONNX and imported with ``--mean 0.5 --std 0.25``,
is evaluated and predicted by volnet exactly as PyTorch does; imported without them, every
command (predict, evaluate, slide, finetune) says once what it feeds instead of guessing."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import volnet as vn
from volnet.cli import main

CLASSES = ("dark", "grey", "light")   # sorted, as folders list them
LEVELS = (60, 128, 196)          # each class: a grey level plus noise


class Small(nn.Module):
    """A chain (so ``volnet slide`` applies): conv, ReLU, pool, linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _pixels(rng, label, n):
    noise = rng.normal(0, 18, (n, 8, 8, 3))
    return np.clip(LEVELS[label] + noise, 0, 255).astype(np.uint8)


def _folder(root, rng, per_class=6):
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i, image in enumerate(_pixels(rng, label, per_class)):
                Image.fromarray(image).save(root / split / name / f"{i}.png")
    return root


def _normalised(images):
    """PyTorch's training transform: ToTensor then Normalize(0.5, 0.25)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(ONNX file, data folder, PyTorch's held-out predictions)."""
    root = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = Small()
    x = np.concatenate([_pixels(rng, k, 40) for k in range(3)])
    y = torch.tensor(np.repeat(np.arange(3), 40))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(_normalised(x)), y).backward()
        opt.step()
    model.eval()
    folder = _folder(root / "data", rng)
    test = sorted((folder / "test").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in test])
    with torch.no_grad():
        predicted = model(_normalised(images)).argmax(1).numpy()
    path = root / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, 8, 8), str(path), dynamo=False,
                          opset_version=13, input_names=["x"], dynamic_axes={"x": {0: "N"}})
    labels = np.array([CLASSES.index(p.parent.name) for p in test])
    return path, folder, test, predicted, float((predicted == labels).mean())


def _accuracy(text):
    return float(text.split("accuracy ")[1].split(" ")[0])


def test_import_with_mean_and_std_evaluates_as_pytorch(trained, tmp_path, capsys):
    path, folder, test, predicted, torch_accuracy = trained
    assert torch_accuracy == 1.0                      # the model learnt its task
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "m.safetensors"
    assert main(["import", str(path), "--mean", "0.5", "--std", "0.25", "--class-names",
                 str(names), "--out", str(out)]) == 0
    assert "preprocessing recorded: pixels x / 255, mean [0.5], std [0.25]" in capsys.readouterr().out
    assert vn.load(out).preprocessing["class_names"] == list(CLASSES)
    assert main(["evaluate", str(out), "--data", str(folder)]) == 0
    captured = capsys.readouterr()
    assert _accuracy(captured.out) == torch_accuracy and "note:" not in captured.err
    assert main(["predict", str(out), *map(str, test)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [CLASSES[k] for k in predicted]


def test_scale_folds_into_mean_and_std(trained, tmp_path, capsys):
    """--scale 1 with the statistics on the 0-255 scale is the same preprocessing."""
    path, folder, _, _, torch_accuracy = trained
    out = tmp_path / "raw.safetensors"
    assert main(["import", str(path), "--scale", "1", "--mean", "127.5", "--std", "63.75",
                 "--out", str(out)]) == 0
    assert vn.load(out).preprocessing["scale"] == "x * 1.0"
    assert main(["evaluate", str(out), "--data", str(folder)]) == 0
    assert _accuracy(capsys.readouterr().out) == torch_accuracy


def test_without_preprocessing_every_command_says_once_what_it_feeds(trained, tmp_path, capsys):
    path, folder, test, _, torch_accuracy = trained
    out = tmp_path / "bare.safetensors"
    assert main(["import", str(path), "--out", str(out)]) == 0
    assert "no preprocessing recorded" in capsys.readouterr().out
    note = "records no preprocessing; feeding pixels / 255 with no mean or std"
    commands = {
        "evaluate": ["evaluate", str(out), "--data", str(folder)],
        "predict": ["predict", str(out), str(test[0])],
        "slide": ["slide", str(out), str(test[0]), "--top", "1"],
        "finetune": ["finetune", str(out), "--data", str(folder / "train"), "--epochs", "1",
                     "--quiet", "--out", str(tmp_path / "tuned.safetensors")],
    }
    for name, argv in commands.items():
        assert main(argv) == 0, name
        captured = capsys.readouterr()
        assert captured.err.count(note) == 1, (name, captured.err)
        assert f"volnet {name}: note: {out}" in captured.err
        assert "volnet import MODEL.onnx --mean M --std S" in captured.err
        if name == "evaluate":       # pixels / 255 is not what the model was trained on
            assert _accuracy(captured.out) < torch_accuracy
    # finetune records what it fed, so the tuned checkpoint is silent from then on
    tuned = vn.load(tmp_path / "tuned.safetensors").preprocessing
    assert tuned["scale"] == "x / 255" and tuned["mean"] is None
    assert main(["evaluate", str(tmp_path / "tuned.safetensors"), "--data", str(folder)]) == 0
    assert "note:" not in capsys.readouterr().err


def test_slide_with_a_checkpoint_as_weights_keeps_its_mean_and_std(tmp_path, capsys):
    """volnet slide lenet5 --weights CK normalises as CK records (it dropped them before)."""
    net = vn.models.lenet5()
    ck = tmp_path / "lenet.safetensors"
    vn.save(ck, net, preprocessing={"input_shape": [1, 28, 28], "scale": "x / 255",
                                    "mean": [0.5], "std": [0.25]})
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8)).save(image)
    assert main(["slide", str(ck), str(image), "--top", "3"]) == 0
    as_checkpoint = capsys.readouterr().out.splitlines()[2:]
    assert main(["slide", "lenet5", str(image), "--weights", str(ck), "--top", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2:] == as_checkpoint and "note:" not in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--mean", "0.5,0.4", "--std", "0.25"], "records a mean of 2 values for 3-channel images"),
    (["--std", "0"], r"--std \[0.0\] must be > 0"),
    (["--scale", "-2"], "must be a positive number"),
    (["--scale", "abc"], "is not a factor such as 1/255"),
])
def test_bad_preprocessing_arguments_are_named(trained, tmp_path, capsys, argv, message):
    import re

    assert main(["import", str(trained[0]), *argv, "--out", str(tmp_path / "x.safetensors")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x.safetensors").exists()


def test_class_names_must_match_the_outputs(trained, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert main(["import", str(trained[0]), "--class-names", str(names),
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "lists 2 names but" in capsys.readouterr().err


def test_exported_file_keeps_a_recorded_scale(trained, tmp_path, capsys):
    """export_onnx writes scale, mean and std to metadata_props; importing that file again
    (no flags) evaluates as the checkpoint it came from."""
    out = tmp_path / "raw.safetensors"
    assert main(["import", str(trained[0]), "--scale", "1", "--mean", "127.5", "--std", "63.75",
                 "--out", str(out)]) == 0
    again = tmp_path / "again.onnx"
    vn.io.export_onnx(vn.load(out), again, (3, 8, 8))
    props = {p.key: p.value for p in __import__("onnx").load(str(again)).metadata_props}
    assert props["volnet.scale"] == '"x * 1.0"' and props["volnet.mean"] == "[127.5]"
    assert props["volnet.preprocessing"].startswith("pixels as x * 1.0, then (x - mean) / std")
    back = tmp_path / "back.safetensors"
    assert main(["import", str(again), "--out", str(back)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(back), "--data", str(trained[1])]) == 0
    captured = capsys.readouterr()
    assert _accuracy(captured.out) == trained[4] and "note:" not in captured.err


def test_scale_as_given_is_said_not_guessed(tmp_path, capsys):
    """vn.fit on already-normalised arrays records scale 'as given': commands say so once."""
    net = vn.Sequential(vn.Flatten(), vn.Linear(3 * 8 * 8, 3, rng=0))
    ck = tmp_path / "given.safetensors"
    vn.save(ck, net, preprocessing={"input_shape": [3, 8, 8], "scale": "as given",
                                    "class_names": list(CLASSES)})
    image = tmp_path / "i.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(image)
    assert main(["predict", str(ck), str(image)]) == 0
    err = capsys.readouterr().err
    assert err.count("trained on arrays taken as given") == 1 and "feeding pixels / 255" in err
