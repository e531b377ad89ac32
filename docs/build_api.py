"""Build volnet's API reference (HTML) from its docstrings with pdoc.

    python docs/build_api.py            # writes docs/api/index.html and one page per module
    python docs/build_api.py OUT_DIR

It then checks for broken references and exits with status 1 listing them: a link in the
generated pages to a page or anchor that does not exist, or a Sphinx-style role in a
docstring (:func:`name`, :class:`name`, ...) naming nothing that exists.

Every public module is documented and linked from its package's page, down from the
landing page (pdoc alone follows ``volnet.__all__``, which lists only ``models`` among the
submodules); ``volnet.__main__`` is left out because importing it runs the CLI. The
docstrings are Google style.
"""

from __future__ import annotations

import contextlib
import functools
import html.parser
import importlib
import inspect
import pathlib
import pkgutil
import re
import sys
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]


def public_modules() -> list[str]:
    """Dotted names of volnet and every submodule without a leading underscore."""
    sys.path.insert(0, str(ROOT))
    import volnet

    names = ["volnet"]
    for info in pkgutil.walk_packages(volnet.__path__, "volnet."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts[1:]):
            names.append(info.name)
    return sorted(names)


def build(out: pathlib.Path) -> list[str]:
    """Write the HTML reference into ``out``; returns the modules documented."""
    import pdoc
    import pdoc.render

    modules = public_modules()
    pdoc.render.configure(docformat="google", show_source=False)
    with warnings.catch_warnings(), _every_submodule_listed():
        warnings.filterwarnings("ignore", message="The module specification")
        pdoc.pdoc(*modules, output_directory=out)
    return modules


@contextlib.contextmanager
def _every_submodule_listed():
    """pdoc lists a package's submodules from its ``__all__`` when it has one, so the landing
    page (volnet, whose ``__all__`` names the API, not the modules) linked only ``models``:
    while building, every package lists all its public submodules."""
    from pdoc import doc

    def submodules(self) -> list:
        if not hasattr(self.obj, "__path__"):
            return []
        found = pkgutil.iter_modules(self.obj.__path__, self.obj.__name__ + ".")
        return [doc.Module.from_name(info.name) for info in sorted(found, key=lambda i: i.name)
                if not info.name.rpartition(".")[2].startswith("_")]

    listed = functools.cached_property(submodules)
    listed.__set_name__(doc.Module, "submodules")
    original = doc.Module.__dict__["submodules"]
    doc.Module.submodules = listed
    try:
        yield
    finally:
        doc.Module.submodules = original


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


def broken_links(out: pathlib.Path) -> list[str]:
    """Links between the generated pages whose page or anchor does not exist."""
    pages = {}
    for page in out.rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        pages[page.resolve()] = parser
    broken = []
    for page, parser in pages.items():
        for href in parser.hrefs:
            if re.match(r"^[a-z]+:", href):            # http:, https:, mailto:
                continue
            target, _, anchor = href.partition("#")
            path = (page.parent / target).resolve() if target else page
            if path not in pages:
                broken.append(f"{page.relative_to(out.resolve())}: link to missing page {href}")
            elif anchor and anchor not in pages[path].ids:
                broken.append(f"{page.relative_to(out.resolve())}: link to missing anchor {href}")
    return broken


ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc):`~?([\w.]+)(?:\(\))?`")


def _resolves(name: str, module, owner) -> bool:
    """Whether ``name`` names an object: dotted from the top, or from ``owner``/``module``."""
    scopes = [owner, module] if owner is not None else [module]
    for scope in scopes:
        obj = scope
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return True
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return False
        return True
    return False


def broken_roles(modules: list[str]) -> list[str]:
    """Docstring roles (:func:`x` ...) in volnet's modules that name nothing that exists."""
    broken = []
    for name in modules:
        module = importlib.import_module(name)
        items = [(module, None)]
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != name:
                continue
            items.append((obj, obj if inspect.isclass(obj) else None))
            if inspect.isclass(obj):
                items += [(member, obj) for member in vars(obj).values()
                          if callable(member) or isinstance(member, property)]
        for obj, owner in items:
            for ref in ROLE.findall(inspect.getdoc(obj) or ""):
                if not _resolves(ref, module, owner):
                    where = getattr(obj, "__qualname__", name)
                    broken.append(f"{name}: {where}: the docstring names {ref!r}, which does "
                                  "not exist")
    return sorted(set(broken))


if __name__ == "__main__":
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "api"
    documented = build(target)
    problems = broken_links(target) + broken_roles(documented)
    print(f"{len(documented)} modules documented in {target}/index.html")
    for problem in problems:
        print("broken reference:", problem, file=sys.stderr)
    sys.exit(1 if problems else 0)
