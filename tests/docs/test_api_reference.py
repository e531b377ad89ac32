"""The API reference builds from the docstrings with the documented command, and has no
broken references (links to missing pages or anchors, docstring roles naming nothing)."""

import importlib.util
import pathlib
import posixpath
import re

import pytest

BUILD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "build_api.py"


def build_api():
    spec = importlib.util.spec_from_file_location("build_api", BUILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_builds_without_broken_references(tmp_path):
    pytest.importorskip("pdoc")
    api = build_api()
    documented = api.build(tmp_path)
    for name in ("volnet.layers.conv", "volnet.train.optim", "volnet.init", "volnet.io.checkpoint"):
        assert name in documented
        page = tmp_path / (name.replace(".", "/") + ".html")
        assert page.is_file(), page
    optim_page = (tmp_path / "volnet/train/optim.html").read_text()
    assert "Build an optimizer from the network" in optim_page
    assert api.broken_links(tmp_path) == []
    assert api.broken_roles(documented) == []
    # issue 23: every public module is reachable from the landing page through the
    # "Submodules" lists (before, volnet's page linked only models)
    assert reachable(tmp_path, "index.html") >= {n.replace(".", "/") + ".html" for n in documented}


def reachable(out, start):
    """Pages reachable from ``start`` by following the links between pages."""
    seen, todo = set(), [start]
    while todo:
        page = todo.pop()
        if page in seen or not (out / page).is_file():
            continue
        seen.add(page)
        text = (out / page).read_text(encoding="utf-8")
        targets = re.findall(r'(?:href="|url=)([^"#:]+\.html)', text)
        todo += [posixpath.normpath(posixpath.join(posixpath.dirname(page), t)) for t in targets]
    return seen


def test_the_checker_finds_broken_references(tmp_path):
    api = build_api()
    (tmp_path / "a.html").write_text('<a href="b.html#x">b</a><a href="a.html#here" id="here">')
    (tmp_path / "b.html").write_text('<p id="y"></p><a href="c.html">c</a>')
    assert sorted(api.broken_links(tmp_path)) == ["a.html: link to missing anchor b.html#x",
                                          "b.html: link to missing page c.html"]
    import types
    fake = types.ModuleType("fake_module")
    fake.__doc__ = "Uses :func:`no_such_function` and :class:`volnet.layers.Conv2d`."
    import sys
    sys.modules["fake_module"] = fake
    try:
        assert api.broken_roles(["fake_module"]) == [
            ("fake_module: fake_module: the docstring names 'no_such_function', "
             "which does not exist")]
    finally:
        del sys.modules["fake_module"]
