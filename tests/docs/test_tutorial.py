"""docs/tutorial.md runs as written and prints what it shows.

The ```python blocks run in order in one namespace; the ```text block after each is the
output it shows. The text with numbers blanked must match exactly; integers must match
exactly; decimals to 2% (or 0.02), since BLAS builds may round training differently.
"""

import contextlib
import io
import math
import pathlib
import re

import pytest

TUTORIAL = pathlib.Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e-?\d+)?")


def blocks():
    """(code, shown output) pairs in the order of the page."""
    pairs = re.findall(r"```python\n(.*?)```(?:\s*\nprints\n\n```text\n(.*?)```)?",
                       TUTORIAL.read_text(), flags=re.DOTALL)
    assert len(pairs) >= 7, "the tutorial lost its code blocks"
    return pairs


def same_output(printed: str, shown: str) -> bool:
    if NUMBER.sub("#", printed).rstrip() != NUMBER.sub("#", shown).rstrip():
        return False
    for got, want in zip(NUMBER.findall(printed), NUMBER.findall(shown)):
        if "." in want:
            a, b = float(got.replace(",", "")), float(want.replace(",", ""))
            if not math.isclose(a, b, rel_tol=0.02, abs_tol=0.02):
                return False
        elif got != want:
            return False
    return True


def test_same_output_compares_text_and_numbers():
    assert same_output("acc 0.81, 61,706 params", "acc 0.80, 61,706 params")
    assert not same_output("acc 0.71, 61,706 params", "acc 0.80, 61,706 params")
    assert not same_output("acc 0.80, 61,707 params", "acc 0.80, 61,706 params")
    assert not same_output("loss 0.80, 61,706 params", "acc 0.80, 61,706 params")


def test_tutorial_runs_and_prints_what_it_shows():
    pytest.importorskip("onnx")                  # section 7 imports a model through ONNX
    namespace: dict = {}
    for index, (code, shown) in enumerate(blocks(), 1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{TUTORIAL.name} block {index}", "exec"), namespace)  # noqa: S102
        assert same_output(out.getvalue(), shown), (
            f"block {index} printed:\n{out.getvalue()}\nthe tutorial shows:\n{shown}")


def test_tutorial_covers_the_lecture():
    headings = re.findall(r"^## \d+\. (.+)$", TUTORIAL.read_text(), flags=re.MULTILINE)
    for topic in ("volume", "CONV arithmetic", "forward and backward", "Training LeNet",
                  "summaries", "FC -> CONV", "Fine-tuning an imported model"):
        assert any(topic in h for h in headings), topic
