"""benchmarks/setting_ab.py: the in-process A/B of one setting that section 60 of
benchmarks/README.md measured with. Its argument parsing (no timing here): a setting names
a module and one of its attributes and the values to switch between; anything else is
refused naming the fix; a run restores the setting it switched."""

import argparse
import sys

import pytest

from benchmarks import setting_ab
from volnet.layers import inference_plan


def test_a_setting_names_a_module_attribute_and_its_values():
    module, attr, values = setting_ab._setting(
        "volnet.layers.inference_plan.BRANCH_BALANCE=0.9,1,False")
    assert module is inference_plan and attr == "BRANCH_BALANCE"
    assert values == [0.9, 1, False] and isinstance(values[1], int)


@pytest.mark.parametrize("text, message", [
    ("BRANCH_BALANCE=1", "module.NAME=v1,v2"),
    ("volnet.layers.inference_plan.BRANCH_BALANCE", "module.NAME=v1,v2"),
    ("volnet.layers.inference_plan.NO_SUCH=1", "no setting 'NO_SUCH'"),
    ("volnet.no_such_module.X=1", "cannot import"),
    ("volnet.layers.inference_plan.BRANCH_BALANCE=1,abc", "'abc' is not a number"),
])
def test_a_wrong_setting_is_refused_naming_the_fix(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        setting_ab._setting(text)


def test_a_run_restores_the_setting(monkeypatch, capsys):
    """Two values on a tiny network, one round: both timed, the setting as it was after."""
    before = inference_plan.BRANCH_BALANCE
    monkeypatch.setattr(setting_ab.timing, "GAP_S", 0.0)
    setting = "volnet.layers.inference_plan.BRANCH_BALANCE=0.5,0.9"
    monkeypatch.setattr(sys, "argv", ["setting_ab", setting, "--net", "lenet5",
                                      "--shape", "1x28x28", "--rounds", "1"])
    setting_ab.main()
    out = capsys.readouterr().out
    assert "BRANCH_BALANCE=0.5: median" in out and "BRANCH_BALANCE=0.9: median" in out
    assert "scores agree" in out
    assert inference_plan.BRANCH_BALANCE == before
