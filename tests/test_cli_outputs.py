"""Writing commands never clobber, never half-write, and refuse bad outputs before any work.

The cases are issue 24's: ``volnet generate --npy p`` replaced an existing ``p.npy`` (np.save
appends the suffix), huge ``--n`` ended in a raw MemoryError, a missing folder or an empty
``--out`` in a raw FileNotFoundError (``train`` after a whole epoch), ``--npy`` into a missing
folder left the PNG written, ``--seed -1`` a raw ValueError.
"""

import os
import tracemalloc

import numpy as np
import pytest

from volnet.cli import main
from volnet.commands import outputs
from volnet.io import checkpoint as ck
from volnet.train.generative import build
from volnet.train.sampling import generate


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    """An (untrained) DCGAN checkpoint: generate needs only its architecture and weights."""
    return str(ck.save(tmp_path_factory.mktemp("gan") / "gan.safetensors", build("dcgan", 0)))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr()


def _files(folder):
    return sorted(os.listdir(folder))


def test_npy_suffix_is_resolved_and_an_existing_file_kept(gan, tmp_path, capsys):
    (tmp_path / "p.npy").write_bytes(b"precious")
    code, out = _run(capsys, "generate", gan, "--n", 4, "--out", tmp_path / "a.png",
                     "--npy", tmp_path / "p")
    assert code == 2 and "p.npy already exists" in out.err and "--overwrite" in out.err
    assert (tmp_path / "p.npy").read_bytes() == b"precious" and _files(tmp_path) == ["p.npy"]
    code, out = _run(capsys, "generate", gan, "--n", 4, "--out", tmp_path / "a.png",
                     "--npy", tmp_path / "p", "--overwrite")
    assert code == 0 and f"and {tmp_path / 'p.npy'}" in out.out
    assert np.load(tmp_path / "p.npy").shape == (4, 1, 28, 28)


def test_two_options_naming_one_file_are_refused(gan, tmp_path, capsys):
    code, out = _run(capsys, "generate", gan, "--out", tmp_path / "x.npy", "--npy", tmp_path / "x")
    assert code == 2 and "--npy and --out both name" in out.err and str(tmp_path / "x.npy") in out.err
    assert _files(tmp_path) == []


@pytest.mark.parametrize("argv,message", [
    (["--n", "1000000000"], "memory"),
    (["--n", "1000000"], "memory"),   # 6 GB of digits, grid and PNG: over the 2 GiB default
    (["--seed", "-1"], "--seed must be between 0"),
    (["--n", "0"], "--n must be >= 1"),
])
def test_bad_sizes_exit_2_before_allocating(gan, tmp_path, capsys, argv, message):
    tracemalloc.start()
    code, out = _run(capsys, "generate", gan, "--out", tmp_path / "a.png", *argv)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and message in out.err and "Traceback" not in out.err
    assert peak < 64 << 20 and _files(tmp_path) == []


def test_budget_can_be_raised_for_big_n(gan, tmp_path, capsys):
    code, out = _run(capsys, "--max-bytes", "64M", "generate", gan, "--n", 6000,
                     "--out", tmp_path / "a.png")
    assert code == 2 and "--max-bytes" in out.err


@pytest.mark.parametrize("target", ["missing/dir/a.png", ""])
def test_bad_out_path_exits_2_and_writes_nothing(gan, tmp_path, capsys, target):
    os.chdir(tmp_path)
    code, out = _run(capsys, "generate", gan, "--n", 2, "--out", target)
    assert code == 2 and "Traceback" not in out.err and ".part" not in out.err
    assert ("does not exist" in out.err) if target else ("--out is empty" in out.err)
    assert _files(tmp_path) == []


def test_npy_into_a_missing_folder_leaves_no_png(gan, tmp_path, capsys):
    code, out = _run(capsys, "generate", gan, "--n", 2, "--out", tmp_path / "a.png",
                     "--npy", tmp_path / "missing" / "x.npy")
    assert code == 2 and "missing" in out.err and _files(tmp_path) == []


def test_a_failure_while_writing_leaves_every_target_as_it_was(gan, tmp_path, capsys,
                                                               monkeypatch):
    (tmp_path / "a.png").write_bytes(b"old png")
    real, calls = outputs.write_part, []

    def full_disk(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(outputs, "write_part", full_disk)
    with pytest.raises(OSError):
        main(["generate", gan, "--n", "2", "--out", str(tmp_path / "a.png"),
              "--npy", str(tmp_path / "a"), "--overwrite"])
    assert len(calls) == 2 and _files(tmp_path) == ["a.png"]
    assert (tmp_path / "a.png").read_bytes() == b"old png"   # no .part left, no new .npy


def test_batched_generation_draws_the_same_digits():
    net = build("dcgan", 0)
    whole = generate(net, 7, seed=3, batch=7)
    np.testing.assert_allclose(generate(net, 7, seed=3, batch=3), whole, atol=1e-6)


def test_train_refuses_a_missing_folder_before_reading_data(tmp_path, capsys):
    code, out = _run(capsys, "train", "lenet5", "--epochs", 1, "--quiet",
                     "--out", tmp_path / "missing" / "c.safetensors")
    assert code == 2 and "does not exist" in out.err and "training" not in out.out


def test_train_generative_refuses_a_missing_folder(tmp_path, capsys):
    code, out = _run(capsys, "train", "vae", "--epochs", 1, "--quiet", "--limit", 64,
                     "--out", tmp_path / "missing" / "c.safetensors")
    assert code == 2 and "does not exist" in out.err and "training" not in out.out


def test_import_finetune_and_slide_refuse_a_missing_folder(gan, tmp_path, capsys):
    bad = tmp_path / "missing" / "out"
    (tmp_path / "m.onnx").write_bytes(b"not read: the output is checked first")
    for argv in (["import", tmp_path / "m.onnx", "--out", bad],
                 ["finetune", gan, "--data", tmp_path, "--out", bad],
                 ["slide", gan, tmp_path / "nothing.png", "--out", bad]):
        code, out = _run(capsys, *argv)
        assert code == 2 and "does not exist" in out.err, (argv, out.err)
    assert _files(tmp_path) == ["m.onnx"]


def test_resume_may_continue_its_own_checkpoint(tmp_path):
    plan = outputs.OutputPlan(overwrite=False)
    (tmp_path / "run.safetensors").write_bytes(b"x")
    assert plan.add("--out", tmp_path / "run.safetensors", replaceable=True)
    with pytest.raises(outputs.ConfigError, match="already exists"):
        outputs.OutputPlan().add("--out", tmp_path / "run.safetensors")
    with pytest.raises(outputs.ConfigError, match="is a folder"):
        outputs.OutputPlan().add("--out", tmp_path)


def test_samples_folder_is_created_or_refused_up_front(tmp_path, capsys):
    (tmp_path / "file").write_bytes(b"x")
    code, out = _run(capsys, "train", "vae", "--epochs", 1, "--quiet", "--limit", 64,
                     "--samples", tmp_path / "file", "--out", tmp_path / "c.safetensors")
    assert code == 2 and "is a file, not a folder" in out.err and "training" not in out.out
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "epoch-1.png").write_bytes(b"earlier run")
    code, out = _run(capsys, "train", "vae", "--epochs", 1, "--quiet", "--limit", 64,
                     "--samples", tmp_path / "grids", "--out", tmp_path / "c.safetensors")
    assert code == 2 and "already holds epoch-1.png" in out.err
    assert (tmp_path / "grids" / "epoch-1.png").read_bytes() == b"earlier run"
    plan = outputs.OutputPlan()
    assert plan.folder("--samples", tmp_path / "new" / "deep") and (tmp_path / "new" / "deep").is_dir()
