"""The resume command printed after Ctrl-C, typed as printed, ends where the straight run does
(segmenters and the DCGAN, run with non-default --epochs/--batch-size/--limit)."""

import os
import re
import shlex
import signal

import numpy as np
import pytest

import volnet as vn
from volnet.cli import main
from volnet.data.scenes import CLASS_NAMES, make_scenes
from volnet.data.segmentation_folder import write_segmentation_folder


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("VOLNET_THREADS", "1")


def interrupt_at(monkeypatch, step):
    from volnet.train.trainer import Trainer

    real_step = Trainer._train_step

    def step_then_interrupt(self, xb, yb):
        result = real_step(self, xb, yb)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    return lambda: monkeypatch.setattr(Trainer, "_train_step", real_step)


def printed_resume(text):
    line = re.search(r"continue with: (volnet train .*)", text).group(1)
    args = shlex.split(line)
    assert args[0] == "volnet"
    return args[1:] + ["--quiet"]


def assert_same_weights(a, b):
    a, b = vn.load(a).state_dict(), vn.load(b).state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_segmenter_resume_as_printed_keeps_the_planned_epochs(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "scenes"
    write_segmentation_folder(folder / "train", *make_scenes(24, "train", seed=3))
    write_segmentation_folder(folder / "test", *make_scenes(8, "test", seed=3))
    (folder / "classes.txt").write_text("\n".join(CLASS_NAMES))
    args = ["train", "dilated", "--data", str(folder), "--epochs", "2", "--batch-size", "8",
            "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a.safetensors")]) == 0
    capsys.readouterr()
    restore = interrupt_at(monkeypatch, 4)                 # epoch 2, batch 1 of 3
    assert main(args + ["--out", str(tmp_path / "b.safetensors")]) == 130
    restore()
    resume = printed_resume(capsys.readouterr().out)
    assert main(resume) == 0
    state = vn.io.checkpoint.load_checkpoint(tmp_path / "b.safetensors").trainer_state
    assert state["epoch"] == 2                             # not the default 8
    assert_same_weights(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_dcgan_resume_as_printed_keeps_the_runs_options(tmp_path, monkeypatch, capsys):
    args = ["train", "dcgan", "--epochs", "2", "--batch-size", "32", "--limit", "96", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a.safetensors")]) == 0
    capsys.readouterr()
    restore = interrupt_at(monkeypatch, 4)                 # epoch 2, batch 1 of 3
    assert main(args + ["--out", str(tmp_path / "b.safetensors")]) == 130
    restore()
    resume = printed_resume(capsys.readouterr().out)
    assert main(resume) == 0
    state = vn.io.checkpoint.load_checkpoint(tmp_path / "b.safetensors").trainer_state
    assert state["epoch"] == 2
    assert_same_weights(tmp_path / "a.safetensors", tmp_path / "b.safetensors")


def test_dcgan_bare_resume_continues_the_run_it_names(tmp_path, monkeypatch, capsys):
    """`volnet train dcgan --resume CK` alone: --help promises the run's planned length; it
    trained 11 epochs on all 7,000 images instead of the run's 2 epochs on 96."""
    args = ["train", "dcgan", "--epochs", "2", "--batch-size", "32", "--limit", "96", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a.safetensors")]) == 0
    restore = interrupt_at(monkeypatch, 4)
    assert main(args + ["--out", str(tmp_path / "b.safetensors")]) == 130
    restore()
    out = str(tmp_path / "b.safetensors")
    assert main(["train", "dcgan", "--quiet", "--resume", out]) == 0
    assert vn.io.checkpoint.load_checkpoint(out).trainer_state["epoch"] == 2
    assert_same_weights(tmp_path / "a.safetensors", out)
    capsys.readouterr()
    assert main(["train", "dcgan", "--quiet", "--resume", out, "--batch-size", "12"]) == 2
    assert "--batch-size 32" in capsys.readouterr().err
