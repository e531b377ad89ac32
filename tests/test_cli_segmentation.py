"""`volnet train fcn|dilated|dilated-context`, `volnet segment` and `volnet evaluate` on a
small folder of digit scenes; Ctrl-C mid-epoch and --resume end where a straight run does."""

import os
import signal

import numpy as np
import pytest
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.data.scenes import CLASS_NAMES, make_scenes
from volnet.data.segmentation_folder import write_segmentation_folder
from volnet.tools.segment_image import voc_palette


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Bit-for-bit comparisons need one thread count in both runs."""
    monkeypatch.setenv("VOLNET_THREADS", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_segmentation_folder(root / "train", *make_scenes(48, "train", seed=9))
    write_segmentation_folder(root / "test", *make_scenes(16, "test", seed=9))
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES))
    return root


def train_args(folder, out, model="dilated", *extra):
    return ["train", model, "--data", str(folder), "--epochs", "2", "--batch-size", "8",
            "--quiet", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ck") / "dilated.safetensors"
    os.environ["VOLNET_THREADS"] = "1"
    try:
        assert main(train_args(folder, out)) == 0
    finally:
        del os.environ["VOLNET_THREADS"]
    return out


@pytest.mark.parametrize("model", ["fcn", "dilated-context"])
def test_each_segmenter_trains_and_reports_mean_iou(folder, tmp_path, model, capsys):
    out = tmp_path / "m.safetensors"
    assert main(train_args(folder, out, model)) == 0
    text = capsys.readouterr().out
    assert "held-out mean IoU" in text and "per-class IoU" in text and "background" in text
    ckpt = vn.io.checkpoint.load_checkpoint(out)
    assert ckpt.preprocessing["task"] == "segmentation"
    assert ckpt.trainer_state["epoch"] == 2
    if model == "dilated-context":    # Yu & Koltun's two stages: the front-end first
        front = vn.io.checkpoint.load_checkpoint(tmp_path / "m-frontend.safetensors")
        assert front.trainer_state["epoch"] == 8 and "Stage 2 of 2" in text
        assert "context.ctx_conv1_1.weight" not in front.net.state_dict()


def test_evaluate_prints_what_training_measured(trained, folder, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(trained), "--data", str(folder)]) == 0
    text = capsys.readouterr().out
    state = vn.io.checkpoint.load_checkpoint(trained).trainer_state
    assert f"mean IoU {state['history']['val_mean_iou'][-1]:.4f}" in text
    assert "per-class IoU" in text and "held-out split" in text


def test_evaluate_a_folder_without_split_uses_all_its_images(trained, tmp_path, capsys):
    x, y = make_scenes(6, "test", seed=11)
    write_segmentation_folder(tmp_path, x, y)
    assert main(["evaluate", str(trained), "--data", str(tmp_path)]) == 0
    assert "all 6 images" in capsys.readouterr().out


def test_segment_writes_overlay_and_mask(trained, folder, tmp_path, capsys):
    image = folder / "test" / "images" / "00000.png"
    out, mask = tmp_path / "overlay.png", tmp_path / "mask.png"
    assert main(["segment", str(trained), str(image), "--out", str(out), "--mask", str(mask)]) == 0
    assert "64x64 pixels" in capsys.readouterr().out
    labels = np.asarray(Image.open(mask))
    assert labels.shape == (64, 64) and labels.max() <= 10
    # the mask is the network's argmax, preprocessed as training did
    net = vn.load(trained)
    prep = net.preprocessing
    x = (np.asarray(Image.open(image), np.float32)[None, None] / 255 - prep["mean"][0]) / prep["std"][0]
    np.testing.assert_array_equal(labels, net.forward(x)[0].argmax(axis=0))
    overlay = np.asarray(Image.open(out))
    assert overlay.shape == (256, 256, 3)                      # 64 px drawn 4x
    grey = np.asarray(Image.open(image))
    painted = labels > 0
    tile = overlay[::4, ::4]
    np.testing.assert_array_equal(tile[~painted], np.repeat(grey[~painted][:, None], 3, axis=1))
    expected = np.round(0.4 * grey[painted][:, None] + 0.6 * voc_palette()[labels[painted]])
    np.testing.assert_array_equal(tile[painted], expected.astype(np.uint8))
    assert main(["segment", str(trained), str(image), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_segment_refuses_a_classifier(tmp_path, capsys):
    path = tmp_path / "lenet.safetensors"
    vn.save(path, vn.models.lenet5(), preprocessing={"input_shape": [1, 28, 28]})
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    assert main(["segment", str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / "o.png")]) == 2
    assert "not a segmentation checkpoint" in capsys.readouterr().err


def test_ctrl_c_mid_epoch_and_resume_give_the_straight_run_bit_for_bit(trained, folder, tmp_path,
                                                                       monkeypatch, capsys):
    from volnet.train.trainer import Trainer

    real_step = Trainer._train_step

    def step_then_interrupt(self, xb, yb):
        result = real_step(self, xb, yb)
        if self.step == 8:                              # epoch 2, batch 2 of 6
            os.kill(os.getpid(), signal.SIGINT)
        return result

    out = tmp_path / "cut.safetensors"
    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    assert main(train_args(folder, out)) == 130          # interrupted is not success
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    state = vn.io.checkpoint.load_checkpoint(out).trainer_state
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 8)
    assert main(train_args(folder, out, "dilated", "--resume", str(out))) == 0
    a, b = vn.load(trained).state_dict(), vn.load(out).state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    done = vn.io.checkpoint.load_checkpoint(out).trainer_state["history"]
    straight = vn.io.checkpoint.load_checkpoint(trained).trainer_state["history"]
    assert done["val_mean_iou"] == straight["val_mean_iou"] and done["loss"] == straight["loss"]
    assert main(train_args(folder, out, "dilated", "--resume", str(out), "--lr", "0.1")) == 2
    assert "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--val-fraction", "0.2"], "are for the segmenters"),
    (["--init", "x.safetensors"], "are for the segmenters"),
])
def test_classifier_refuses_segmentation_options(args, words, capsys):
    assert main(["train", "lenet5", "--epochs", "1", "--quiet", *args]) == 2
    assert words in capsys.readouterr().err


def test_single_folder_needs_val_fraction(tmp_path, capsys):
    write_segmentation_folder(tmp_path, *make_scenes(10, "train", seed=1))
    assert main(["train", "dilated", "--data", str(tmp_path), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "--val-fraction" in capsys.readouterr().err
    assert main(["train", "dilated", "--data", str(tmp_path), "--epochs", "1", "--quiet",
                 "--val-fraction", "0.3", "--batch-size", "4",
                 "--out", str(tmp_path / "a.safetensors")]) == 0


def test_images_whose_size_the_net_cannot_label_are_refused(tmp_path, capsys):
    x, y = make_scenes(8, "train", seed=1)
    write_segmentation_folder(tmp_path / "train", x[:, :, :60, :60], y[:, :60, :60])
    write_segmentation_folder(tmp_path / "test", x[:2, :, :60, :60], y[:2, :60, :60])
    assert main(["train", "fcn", "--data", str(tmp_path), "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "8 for fcn" in capsys.readouterr().err


def test_init_starts_the_context_net_from_a_trained_front_end(trained, folder, tmp_path, capsys):
    """Yu & Koltun's second stage: every front-end tensor is copied, the context module is
    fresh (identity), so before any update the two nets label every pixel alike."""
    from volnet.train.segmentation import build_segmenter, init_from

    net = build_segmenter("dilated-context", 11, 1, seed=5)
    message = init_from(net, str(trained))
    assert "fresh: context" in message
    front = vn.load(trained).state_dict()
    state = net.state_dict()
    for key, value in front.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    scores = np.random.default_rng(0).normal(size=(2, 11, 16, 16)).astype(np.float32)
    # the identity-initialised module passes the non-negative scores through unchanged
    np.testing.assert_allclose(net["context"].forward(scores), np.maximum(scores, 0), atol=1e-6)
    out = tmp_path / "ctx.safetensors"
    assert main(train_args(folder, out, "dilated-context", "--init", str(trained))) == 0
    assert "initialised" in capsys.readouterr().out
    lenet = tmp_path / "lenet.safetensors"
    vn.save(lenet, vn.models.lenet5(), preprocessing={"input_shape": [1, 28, 28]})
    assert main(train_args(folder, tmp_path / "x.safetensors", "dilated", "--init", str(lenet))) == 2
    assert "no weight names in common" in capsys.readouterr().err


def test_evaluate_refuses_masks_with_classes_the_net_does_not_know(trained, tmp_path, capsys):
    x, y = make_scenes(4, "test", seed=2)
    y[0, 0, 0] = 12
    write_segmentation_folder(tmp_path, x, y)
    assert main(["evaluate", str(trained), "--data", str(tmp_path)]) == 2
    assert "use class 12" in capsys.readouterr().err


@pytest.mark.parametrize("name, mean_iou", [("dilated", 0.7186), ("dilated-context", 0.8005)])
def test_bundled_segmenters_score_what_the_readme_reports(name, mean_iou, capsys):
    """The lecture page's nets are the README's seed-0 runs: volnet evaluate on the 500
    held-out scenes gives their mean IoU (a pixel flipped by another thread count moves it
    by about 1e-4)."""
    import re

    from volnet.data.segmenters import checkpoint_path

    assert main(["evaluate", checkpoint_path(name)]) == 0
    shown = float(re.search(r"mean IoU ([\d.]+)", capsys.readouterr().out).group(1))
    assert shown == pytest.approx(mean_iou, abs=2e-3)
