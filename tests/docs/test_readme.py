"""The README's Python example runs as written."""

import itertools
import pathlib
import re
import subprocess

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_examples_run(capsys):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["scores"].shape == (8, 10)
    assert namespace["dx"].shape == namespace["x"].shape
    assert all(layer.grads or not layer.params for layer in namespace["net"])
    # item 1 of issue 15: the first example ends with an update step and the loss falls
    printed = [float(v) for v in re.findall(r"loss ([0-9.]+)", capsys.readouterr().out)]
    shown = [float(v) for v in re.findall(r"step \d: loss ([0-9.]+)",
                                          text.split("```python", 2)[1].split("## ")[0])]
    assert len(printed) == 5 and printed == pytest.approx(shown, abs=2e-3)
    assert all(b < a for a, b in itertools.pairwise(printed)), printed


def _ci_readme_commands(ci):
    return [re.fullmatch(r"readme_\w+='(.*)'", line).group(1)
            for line in ci.splitlines() if re.fullmatch(r"readme_\w+='.*'", line)]


def test_ci_runs_the_readme_set_up_commands_in_order():
    """Issue 23: .ci/run runs the README's first command (install, train LeNet-5) and then its
    second (dev install, test suite), verbatim, in one virtual environment."""
    ci = (README.parent / ".ci" / "run").read_text()
    setup = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [c.strip() for c in re.findall(r"```bash\n(.*?)\n```", setup, flags=re.DOTALL)]
    assert commands[0].startswith("pip install . && volnet train")
    assert _ci_readme_commands(ci) == commands
    calls = re.findall(r'^run_readme "\$(readme_\w+)"$', ci, flags=re.MULTILINE)
    assert calls == re.findall(r"^(readme_\w+)=", ci, flags=re.MULTILINE)


def test_ci_stops_with_the_status_of_a_failing_readme_command(tmp_path):
    """A failure anywhere in a README command (also before its last `&&`) fails the CI run."""
    ci = (README.parent / ".ci" / "run").read_text()
    helper = re.search(r"^run_readme\(\) \{.*?^\}$", ci, flags=re.MULTILINE | re.DOTALL).group(0)
    script = tmp_path / "ci.sh"
    script.write_text("set -euo pipefail\n" + helper
                      + "\nrun_readme '(exit 3) && echo trained-$((1 + 1))'\n"
                      "run_readme 'echo tests-$((2 + 2))'\n")
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 3
    assert "trained-2" not in done.stdout and "tests-4" not in done.stdout   # nothing ran on
    assert "FAILED (3)" in done.stderr
