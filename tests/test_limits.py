"""volnet.limits: the budget's sources and their order, JSON depth without parsing, regular files."""

import json
import os
import pickle

import pytest

from volnet.errors import BudgetError, CheckpointError, ConfigError, DataError, VolnetError
from volnet.limits import (
    DEFAULT_MAX_BYTES,
    ENV_VAR,
    budget,
    check_budget,
    json_depth,
    loads_json,
    max_bytes,
    open_regular,
    parse_size,
)


def test_budget_sources_in_order(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert max_bytes() == DEFAULT_MAX_BYTES == 2 * 1024 ** 3
    monkeypatch.setenv(ENV_VAR, "512M")
    assert max_bytes() == 512 * 1024 ** 2
    with budget("1G"):   # volnet --max-bytes beats the environment
        assert max_bytes() == 1024 ** 3
        assert max_bytes(1000) == 1000   # and an explicit argument beats both
    assert max_bytes() == 512 * 1024 ** 2
    monkeypatch.setenv(ENV_VAR, "lots")
    with pytest.raises(ConfigError, match=f"{ENV_VAR}='lots'"):
        max_bytes()


@pytest.mark.parametrize("text, value", [("1", 1), ("2k", 2048), ("1.5M", 1572864),
                                         ("3GiB", 3 * 1024 ** 3), ("1T", 1024 ** 4)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "-1", "0", "1X", "one"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size(text)


def test_budget_error_is_also_the_readers_error_and_pickles():
    with pytest.raises(DataError) as info:
        check_budget(2049, "x.idx", limit="2K", error=DataError)
    assert isinstance(info.value, BudgetError) and isinstance(info.value, ValueError)
    assert "2,049 bytes" in str(info.value) and "budget of 2.0 KiB" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is DataError and str(again) == str(info.value)
    check_budget(2048, "x.idx", limit="2K", error=DataError)   # equal to the budget is fine


@pytest.mark.parametrize("doc", [{}, [], {"a": [1, {"b": "[[[{{{"}]}, "x", 3, [[[[]]]],
                                 {"k\\\"[": ["\\", "]"]}])
def test_json_depth_matches_the_parsed_document(doc):
    def depth(value):
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0
    text = json.dumps(doc)
    assert json_depth(text) == depth(doc) == json_depth(text.encode())


def test_loads_json_refuses_depth_and_garbage_with_the_given_error():
    assert loads_json("[" * 100 + "]" * 100, "x") is not None
    with pytest.raises(CheckpointError, match="x nests 101 levels deep"):
        loads_json("[" * 101 + "]" * 101, "x", CheckpointError)
    with pytest.raises(VolnetError, match="not valid JSON"):
        loads_json("{", "x")
    with pytest.raises(VolnetError, match="must be JSON text"):
        loads_json(None, "x")


def test_open_regular_refuses_fifos_and_folders_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="FIFO"):
        open_regular(fifo, DataError)
    with pytest.raises(DataError, match="directory"):
        open_regular(tmp_path, DataError)
    with pytest.raises(DataError, match="no such file"):
        open_regular(tmp_path / "absent", DataError)
    (tmp_path / "f").write_bytes(b"abc")
    with open_regular(tmp_path / "f") as f:
        assert f.read() == b"abc"
