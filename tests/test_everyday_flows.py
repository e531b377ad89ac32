"""Issue 23: no silent wrong numbers in the everyday flows. One test per item, written as the
user's flow (install, train, interrupt, resume, predict), each failing on the code before it."""

import contextlib
import json
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from new_user_data import SHAPES, make_shapes_folder
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.data import write_idx
from volnet.data.registry import load_dataset
from volnet.errors import ConfigError, StateError
from volnet.io.safetensors import serialize
from volnet.tools.gradcheck import check_gradients

REPO = Path(__file__).resolve().parents[1]


def _cache_files(root):
    return sorted(p for p in Path(root).rglob("*") if p.suffix in (".nbi", ".nbc"))


# A first use of a compiled kernel (max pooling), from outside the checkout; 128x128 is the
# smallest input that takes the compiled path under VOLNET_KERNELS=auto (backend.COMPILED_MIN).
_USE_KERNEL = ("import numpy as np, volnet as vn; from volnet.runtime import backend; "
               "assert backend.compiled(); assert 'target' in vn.__file__, vn.__file__; "
               "x = np.ones((1, 1, 128, 128), np.float32); print(vn.MaxPool2d(2).forward(x).shape)")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """volnet installed (not editable) into its own folder, as `pip install .` does."""
    pytest.importorskip("numba")
    root = tmp_path_factory.mktemp("site")
    source, target = root / "source", root / "target"
    # a copy, so that building the wheel writes nothing into the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".*", "build", "*.egg-info", "__pycache__", "tests", "benchmarks", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, capture_output=True)
    return target


def _run(installed, env_extra, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "VOLNET_CACHE", "VOLNET_KERNELS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(installed), **env_extra)
    return subprocess.run([sys.executable, "-c", _USE_KERNEL], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_item1_compiled_kernels_cache_per_user_not_in_the_installed_package(installed, tmp_path):
    """pip cannot see files numba writes into site-packages: they must go to the user's cache."""
    home = tmp_path / "cache"
    done = _run(installed, {"XDG_CACHE_HOME": str(home), "HOME": str(tmp_path)}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert _cache_files(installed) == []                     # the install stays as pip left it
    assert _cache_files(home / "volnet" / "numba")           # the user's cache holds them


def test_a_compiled_module_imported_first_still_caches_outside_the_package(installed,
                                                                            tmp_path):
    """A documentation tool (pdoc) or a user may import a kernel module before any kernel
    ran: numba fixes each kernel's cache folder when it is decorated, so the folder must be
    set by then (found when the API reference test left kernels in the checkout)."""
    home = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "VOLNET_CACHE", "VOLNET_KERNELS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(installed), XDG_CACHE_HOME=str(home), HOME=str(tmp_path))
    script = ("import volnet.functional.compiled.pool, volnet.functional.compiled.activation; "
              + _USE_KERNEL)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _cache_files(installed) == []
    assert _cache_files(home / "volnet" / "numba")


def test_item1_read_only_install_works_and_numba_cache_dir_is_respected(installed, tmp_path):
    """A system or container install is read-only; the user's NUMBA_CACHE_DIR wins."""
    xdg, mine = tmp_path / "xdg", tmp_path / "mine"
    modes = {p: p.stat().st_mode for p in [installed, *installed.rglob("*")]}
    try:
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        runs = [_run(installed, {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(xdg)}, tmp_path),
                _run(installed, {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(xdg),
                                 "NUMBA_CACHE_DIR": str(mine)}, tmp_path)]
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert "(1, 1, 64, 64)" in done.stdout
        assert "NumbaWarning" not in done.stderr, done.stderr
    assert _cache_files(xdg) == _cache_files(xdg / "volnet" / "numba") != []
    assert _cache_files(mine)


# ---- items 2 and 3: vn.fit on data whose range contradicts the scale or the statistics --------
def _digits(n=256):
    data = vn.data.load_mnist_sample()
    return data.x_train[:n], data.y_train[:n]


def _lenet():
    return vn.models.lenet5(seed=0)


def test_item2_fit_refuses_0_255_pixels_in_a_float_array():
    x, y = _digits()
    with pytest.raises(ConfigError, match=r"values up to 255.*astype\(np.uint8\)") as err:
        vn.fit(_lenet(), x.astype(np.float32), y, epochs=1, progress=False)
    assert "x / 255" in str(err.value)
    with pytest.raises(ConfigError, match=r"val\[0\] is a float32 array with values up to 255"):
        vn.fit(_lenet(), x, y, epochs=1, progress=False, val=(x.astype(np.float32), y))
    with pytest.raises(ConfigError, match=r"int64 array with values up to 255"):
        vn.fit(_lenet(), x.astype(np.int64), y, epochs=1, progress=False)   # not / 255 either


def test_item3_fit_refuses_statistics_on_the_0_255_scale():
    x, y = _digits()
    with pytest.raises(ConfigError, match=r"mean=\(33.3,\) is not on the 0-1 scale") as err:
        vn.fit(_lenet(), x, y, epochs=1, mean=(33.3,), std=(78.6,), progress=False)
    assert f"mean=({33.3 / 255:.4g},)" in str(err.value)          # the fix, computed for them
    with pytest.raises(ConfigError, match=r"std=\(78.6,\) is not on the 0-1 scale"):
        vn.fit(_lenet(), x, y, epochs=1, mean=(0.1307,), std=(78.6,), progress=False)


def test_items2_3_what_the_net_saw_is_recorded():
    """uint8 and 0-1 floats train the same and record x / 255; normalised floats are refused
    with mean/std (normalised twice), and without them recorded 'as given', with a warning."""
    x, y = _digits(128)
    nets = [_lenet(), _lenet()]
    losses = [vn.fit(net, data, y, epochs=1, mean=(0.1307,), std=(0.3081,), progress=False)["loss"]
              for net, data in zip(nets, (x, x.astype(np.float32) / 255))]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert [n.preprocessing["scale"] for n in nets] == ["x / 255", "x / 255"]
    z = ((x / 255 - 0.1307) / 0.3081).astype(np.float32)
    with pytest.raises(ConfigError, match="already has negative values"):
        vn.fit(_lenet(), z, y, epochs=1, mean=(0.1307,), std=(0.3081,), progress=False)
    net = _lenet()
    with pytest.warns(UserWarning, match="as given"):
        vn.fit(net, z, y, epochs=1, progress=False)
    assert net.preprocessing["scale"] == "as given" and "mean" not in net.preprocessing


# ---- items 4 and 6: Ctrl-C, the resume hint, and the summary after a resume -----------------
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """200 training and 50 held-out real digits in MNIST's IDX format."""
    folder = tmp_path_factory.mktemp("digits")
    data = vn.data.load_mnist_sample()
    for split, x, y in (("train", data.x_train[:200], data.y_train[:200]),
                        ("t10k", data.x_test[:50], data.y_test[:50])):
        write_idx(folder / f"{split}-images-idx3-ubyte", x[:, 0])
        write_idx(folder / f"{split}-labels-idx1-ubyte", y)
    return folder


def _ctrl_c_at(monkeypatch, step):
    """Press Ctrl-C once, right after training step ``step`` (as a user would, mid-epoch)."""
    from volnet.train.trainer import Trainer

    real = Trainer._train_step

    def step_then_interrupt(self, xb, yb):
        result = real(self, xb, yb)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    return lambda: monkeypatch.setattr(Trainer, "_train_step", real)


def test_items4_6_ctrl_c_exits_130_and_the_hinted_command_finishes_the_planned_run(
        digit_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sig.safetensors"
    undo = _ctrl_c_at(monkeypatch, 9)                # 7 batches of 32 per epoch: epoch 2, batch 2
    code = main(["train", "lenet5", "--data", str(digit_folder), "--epochs", "3",
                 "--batch-size", "32", "--out", str(out), "--quiet"])
    undo()
    printed = capsys.readouterr().out
    assert code == 130                                # like a shell's Ctrl-C, not a success
    hint = printed.split("continue with: ")[1].splitlines()[0]
    assert "--epochs 3" in hint
    assert "stopped at epoch 1.32 of 3" in printed    # 1 epoch + 64 of 200 images
    assert main(shlex.split(hint)[1:] + ["--quiet"]) == 0
    printed = capsys.readouterr().out
    assert vn.io.checkpoint.load_checkpoint(out).trainer_state["epoch"] == 3   # not 10
    assert "after 1.68 epochs this run (3 epochs in all" in printed           # not "3 epochs"


def test_item4_the_checkpoint_knows_the_planned_length(digit_folder, tmp_path, monkeypatch,
                                                        capsys):
    """The hint of the old code (no --epochs) also finishes the planned run, not the default's."""
    out = tmp_path / "sig.safetensors"
    undo = _ctrl_c_at(monkeypatch, 3)
    assert main(["train", "lenet5", "--data", str(digit_folder), "--epochs", "2",
                 "--batch-size", "32", "--out", str(out), "--quiet"]) == 130
    undo()
    assert main(["train", "lenet5", "--data", str(digit_folder), "--resume", str(out),
                 "--quiet"]) == 0
    assert vn.io.checkpoint.load_checkpoint(out).trainer_state["epoch"] == 2
    assert "held-out accuracy" in capsys.readouterr().out


# ---- item 5: gradient accumulation written the PyTorch way fails loudly ----------------------
def _micro_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    return [(x[:4], np.arange(4) % 3), (x[4:], np.arange(4, 8) % 3)]


def _small(seed=0):
    return vn.Sequential(vn.Conv2d(1, 2, 3, rng=seed), vn.ReLU(), vn.Flatten(),
                         vn.Linear(32, 3, rng=seed + 1))


def _backward(net, xb, yb, **kwargs):
    loss, dscores = vn.functional.loss.softmax_cross_entropy(net.forward(xb, training=True), yb)
    net.backward(dscores / 2, **kwargs)


def test_item5_pytorch_style_accumulation_is_refused_and_accumulate_true_is_exact():
    net = _small()
    opt = vn.SGD(net, lr=0.1)
    opt.zero_grad()
    for xb, yb in _micro_batches():                   # what a PyTorch user writes
        _backward(net, xb, yb)
    before = net.state_dict()
    with pytest.raises(StateError, match=r"2 backward calls since the last step or zero_grad"
                                          r"\(\) overwrote each other's.*accumulate=True"):
        opt.step()
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())  # no update
    # the documented way gives the gradient of the whole batch (hand reference: one backward
    # over all 8 images, whose mean loss is the mean of the two halves')
    whole = _small()
    x = np.concatenate([xb for xb, _ in _micro_batches()])
    y = np.concatenate([yb for _, yb in _micro_batches()])
    loss, dscores = vn.functional.loss.softmax_cross_entropy(whole.forward(x, training=True), y)
    whole.backward(dscores)
    opt.zero_grad()
    for i, (xb, yb) in enumerate(_micro_batches()):
        _backward(net, xb, yb, accumulate=i > 0)
    for (name, _, g), (_, _, want) in zip(net.named_params(), whole.named_params()):
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7, err_msg=name)
    opt.step()                                        # accepted
    _backward(net, *_micro_batches()[0], accumulate=True)   # accumulate first, then overwrite:
    _backward(net, *_micro_batches()[1])                     # the first is lost, so refused
    with pytest.raises(StateError, match="overwrote"):
        opt.step()
    opt.zero_grad()
    for xb, yb in _micro_batches()[:1]:               # one backward per step: no zero_grad
        _backward(net, xb, yb)
        opt.step()


def test_item5_repeated_backward_without_a_step_is_never_refused():
    """Gradient checks and saliency maps call backward many times with no optimizer step."""
    net = _small()
    opt = vn.Adam(net, lr=1e-3)
    xb, yb = _micro_batches()[0]
    for _ in range(3):                                # inspection, no step
        _backward(net, xb, yb)
    with pytest.raises(StateError, match=r"zero_grad\(\) before this step's backward"):
        opt.step()                                    # ...unless a step follows them
    opt.zero_grad()
    _backward(net, xb, yb)
    opt.step()
    # a float64 gradient check between steps (its own backward) and training again
    net64 = _small().astype("float64")
    opt64 = vn.SGD(net64, lr=0.1)
    _backward(net64, xb.astype(np.float64), yb)
    errors = check_gradients(net64, xb[:2].astype(np.float64), rng=0)
    assert max(errors.values()) < 1e-6
    opt64.zero_grad()
    _backward(net64, xb.astype(np.float64), yb)
    opt64.step()


# ---- frictions ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digit_checkpoint(digit_folder, tmp_path_factory):
    """One quiet epoch of `volnet train lenet5` on the digit folder."""
    out = tmp_path_factory.mktemp("lenet") / "lenet.safetensors"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "lenet5", "--data", str(digit_folder), "--epochs", "1",
                     "--batch-size", "32", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"))


def test_friction_evaluate_class_mismatch_advises_a_command_that_runs(digit_checkpoint, shapes,
                                                                      tmp_path, capsys):
    assert main(["evaluate", str(digit_checkpoint), "--data", str(shapes)]) == 2
    err = capsys.readouterr().err
    advised = shlex.split(err.split("adapt the net to these classes with: ")[1].strip())
    assert advised[:2] == ["volnet", "finetune"]
    out = tmp_path / "tuned.safetensors"
    assert main(advised[1:] + ["--epochs", "1", "--quiet", "--out", str(out)]) == 0   # as advised
    assert vn.load(out).preprocessing["class_names"] == list(SHAPES)


def test_friction_predict_on_an_onnx_file_names_volnet_import(digit_checkpoint, tmp_path,
                                                              capsys):
    net = vn.load(digit_checkpoint)
    onnx_file = tmp_path / "digits.onnx"
    vn.io.export_onnx(net, onnx_file, (1, 28, 28), preprocessing=net.preprocessing)
    digit = tmp_path / "seven.png"
    Image.fromarray(vn.data.load_mnist_sample().x_test[0, 0]).save(digit)
    assert main(["predict", str(onnx_file), str(digit)]) == 2
    err = capsys.readouterr().err
    assert f"volnet import {onnx_file}" in err
    assert main(["import", str(onnx_file)]) == 0                      # as the error says
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "digits.safetensors"), str(digit)]) == 0
    assert main(["predict", str(digit_checkpoint), str(digit)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]   # the same answer
    assert main(["predict", "lenet5", str(digit)]) == 2
    assert "--weights" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pooled_files(shapes, tmp_path_factory):
    """A global-pooling net trained on the shapes (3x16x16), saved as a checkpoint and as ONNX."""
    data = load_dataset(str(shapes), (3, 16, 16))
    net = vn.Sequential(vn.Conv2d(3, 16, 3, padding=1, rng=0), vn.ReLU(), vn.MaxPool2d(2),
                        vn.Conv2d(16, 16, 3, padding=1, rng=2), vn.ReLU(), vn.GlobalAvgPool2d(),
                        vn.Flatten(), vn.Linear(16, 3, rng=1))
    vn.fit(net, data.x_train, data.y_train, epochs=20, batch_size=16, optimizer=vn.Adam(lr=1e-2),
           mean=data.mean, std=data.std, class_names=data.class_names, progress=False)
    folder = tmp_path_factory.mktemp("pooled")
    vn.save(folder / "pooled.safetensors", net)
    vn.io.export_onnx(net, folder / "pooled.onnx", (3, 16, 16), preprocessing=net.preprocessing)
    return folder / "pooled.safetensors", folder / "pooled.onnx"


def test_friction_finetune_checkpoint_takes_another_input_size_as_onnx_does(
        pooled_files, shapes, tmp_path, capsys):
    for i, source in enumerate(pooled_files):
        assert main(["finetune", str(source), "--data", str(shapes), "--input", "3x32x32",
                     "--epochs", "1", "--quiet", "--out", str(tmp_path / f"{i}.safetensors")]) == 0
        assert vn.load(tmp_path / f"{i}.safetensors").preprocessing["input_shape"] == [3, 32, 32]
    capsys.readouterr()
    assert main(["finetune", str(pooled_files[0]), "--data", str(shapes), "--input",
                 "1x16x16", "--out", str(tmp_path / "x.safetensors")]) == 2   # other channels
    assert "3x16x16" in capsys.readouterr().err


def test_friction_finetune_on_its_own_classes_keeps_the_trained_head(pooled_files, shapes,
                                                                     tmp_path, capsys):
    assert main(["evaluate", str(pooled_files[0]), "--data", str(shapes)]) == 0
    trained = float(capsys.readouterr().out.split("accuracy ")[1].split()[0])
    assert trained > 0.8                             # chance: 1/3
    assert main(["finetune", str(pooled_files[0]), "--data", str(shapes), "--epochs", "1",
                 "--quiet", "--out", str(tmp_path / "again.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert f"before {trained:.3f} (its trained head)" in printed


def test_friction_weights_of_another_model_give_a_short_useful_error(digit_checkpoint, tmp_path,
                                                                     capsys):
    weights = tmp_path / "resnet18.safetensors"
    weights.write_bytes(serialize(vn.models.resnet18().state_dict()))   # torchvision's 122 keys
    digit = tmp_path / "seven.png"
    Image.fromarray(vn.data.load_mnist_sample().x_test[0, 0]).save(digit)
    assert main(["predict", "lenet5", "--weights", str(weights), str(digit)]) == 2
    err = capsys.readouterr().err
    assert len(err) < 700, err                                    # not ~130 keys on one line
    assert "122 unexpected keys (conv1.weight" in err and "10 missing keys (0.weight" in err
    assert "another architecture" in err


def test_friction_ink_on_transparency_reads_as_ink_and_a_blank_image_is_named(
        digit_checkpoint, tmp_path, capsys):
    digit = vn.data.load_mnist_sample().x_test[0, 0]                # white ink on black
    paper = tmp_path / "paper.png"                                  # black ink on white paper
    Image.fromarray(255 - digit).save(paper)
    rgba = np.zeros(digit.shape + (4,), np.uint8)
    rgba[..., 3] = digit                                            # black ink on transparency
    ink = tmp_path / "ink.png"
    Image.fromarray(rgba, "RGBA").save(ink)
    light = rgba.copy()
    light[..., :3] = 255                                            # white ink on transparency
    Image.fromarray(light, "RGBA").save(tmp_path / "light.png")
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros(digit.shape + (4,), np.uint8), "RGBA").save(empty)
    screen = tmp_path / "screen.png"
    Image.fromarray(digit).save(screen)
    assert main(["predict", str(digit_checkpoint), str(paper), str(ink), str(screen),
                 str(tmp_path / "light.png"), str(empty)]) == 0
    lines = capsys.readouterr().out.splitlines()
    scores = [line.split(": ", 1)[1].split(" (")[0] for line in lines]
    assert scores[1] == scores[0]                   # composited as a viewer shows it: on white
    assert scores[3] == scores[2] != scores[0]      # white ink: on black
    assert "blank image" in lines[4] and not any("blank" in line for line in lines[:4])


def test_friction_vgg16_activation_count_explains_the_lectures_24m(capsys):
    # the CS231n VGG-16 breakdown, layer by layer (input, 13 CONV, 5 POOL, 3 FC outputs)
    lecture = [224 * 224 * 3] + [224 * 224 * 64] * 2 + [112 * 112 * 64] + \
        [112 * 112 * 128] * 2 + [56 * 56 * 128] + [56 * 56 * 256] * 3 + [28 * 28 * 256] + \
        [28 * 28 * 512] * 3 + [14 * 14 * 512] + [14 * 14 * 512] * 3 + [7 * 7 * 512] + \
        [4096, 4096, 1000]
    assert main(["summary", "vgg16"]) == 0
    printed = capsys.readouterr().out
    counted = int(printed.split("activations: ")[1].split()[0].replace(",", ""))
    note = printed.split("note: ")[1]
    assert f"add up to {sum(lecture):,}" in note
    assert counted - sum(lecture) == 7 * 7 * 512                       # torchvision's avgpool
    assert f"volnet's {counted - sum(lecture):,} more" in note
    assert "24M" in note and "not the sum of its own column" in note
    assert main(["summary", "vgg16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    in_place = sum(r["activations"] for r in rows if r["type"] in ("ReLU", "Dropout", "Flatten"))
    assert f"{in_place / 1e6:.1f}M outputs run in place" in note
    assert f"would give {(counted + in_place) / 1e6:.1f}M" in note
