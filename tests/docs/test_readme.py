"""The README's Python example runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["scores"].shape == (8, 10)
    assert namespace["dx"].shape == namespace["x"].shape
    assert all(layer.grads or not layer.params for layer in namespace["net"])


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    command = re.findall(r"```bash\n(.*?)\n```", README.read_text(), flags=re.DOTALL)[1].strip()
    assert command in ci.splitlines()
