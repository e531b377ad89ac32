"""`volnet train` refuses options (and MPI launches) a model kind would silently ignore,
before any data is read: --accumulate/--sync-bn/--distributed and mpiexec for the segmenters and
the GAN/VAE (under mpiexec each rank trained alone, writing one checkpoint file), --limit and
--samples for the classifiers and the segmenters."""

import pytest

from volnet.cli import main


@pytest.mark.parametrize("model, extra, words", [
    ("dilated", ["--accumulate", "2"], "--accumulate"),
    ("fcn", ["--sync-bn"], "one process"),
    ("dilated", ["--limit", "10"], "--limit"),
    ("dcgan", ["--sync-bn"], "one process"),
    ("lenet5", ["--limit", "10"], "--limit"),
    ("lenet5", ["--samples", "SAMPLES"], "--samples"),
])
def test_ignored_options_are_refused(tmp_path, capsys, model, extra, words):
    out = tmp_path / "ck.safetensors"
    extra = [str(tmp_path / "samples") if e == "SAMPLES" else e for e in extra]
    assert main(["train", model, "--epochs", "1", "--quiet", "--out", str(out), *extra]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "samples").exists()


@pytest.mark.parametrize("model", ["dcgan", "dilated"])
def test_one_process_models_refuse_an_mpi_launch(tmp_path, capsys, monkeypatch, model):
    monkeypatch.setenv("PMI_SIZE", "2")
    out = tmp_path / "ck.safetensors"
    assert main(["train", model, "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    assert "one of 2 MPI ranks" in capsys.readouterr().err
    assert not out.exists()
