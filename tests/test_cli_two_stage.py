"""`volnet train dilated-context` when stage 1's `<out>-frontend.safetensors` exists: the refusal
names commands that work (it said "--resume <out>-frontend.safetensors", and
`volnet train dilated-context --resume` of a front-end fails on the missing context keys)."""

import shlex

import volnet as vn
from volnet.cli import main


def test_existing_front_end_refusal_names_working_commands(tmp_path, capsys):
    front = tmp_path / "x-frontend.safetensors"
    front.write_bytes(b"placeholder")          # refused before it is read
    out = tmp_path / "x.safetensors"
    assert main(["train", "dilated-context", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--init {shlex.quote(str(front))}" in err
    assert f"volnet train dilated --data scenes --resume {shlex.quote(str(front))}" in err
    assert "dilated-context --resume" not in err
    assert front.read_bytes() == b"placeholder" and not out.exists()
