"""The README's zoo table and `volnet summary alexnet` output are what the code produces."""

import pathlib
import re

import volnet as vn
from volnet.models.registry import GENERATIVE, INPUT_SHAPES, MODELS

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_zoo_table_parameter_counts(lazy_init):
    section = README.split("## The zoo", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([\d,]+) \|", section, flags=re.MULTILINE)
    assert {name for name, _, _ in rows} == set(MODELS)
    for name, volume, params in rows:
        assert vn.summary(MODELS[name](), INPUT_SHAPES[name]).totals["params"] == int(
            params.replace(",", "")), name
        c, h, w = INPUT_SHAPES[name]
        assert volume == f"{h}x{w}x{c}"


def test_summary_section_is_real_output(lazy_init):
    section = README.split("## volnet summary", 1)[1]
    shown = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL).group(1)
    assert shown.rstrip("\n") == str(vn.summary(vn.models.alexnet(), (3, 227, 227)))


def test_every_registered_builder_takes_the_common_arguments(lazy_init):
    for name, builder in MODELS.items():
        c, h, w = INPUT_SHAPES[name]
        if name in GENERATIVE:       # no classes: a generator or an auto-encoder
            assert builder(in_channels=c + 1, seed=3).output_shape((c + 1, h, w)), name
            continue
        net = builder(num_classes=7, in_channels=c + 1, seed=3)
        out = net.output_shape((c + 1, h, w))
        assert out[0] == 7, name       # (7,) for classifiers, (7, H, W) for the context module
