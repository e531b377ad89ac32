"""io/ sits below models/ (functional <- layers <- tools/io <- models <- train <- commands):
no io module imports a higher floor, so io/weights.py and models/registry.py no longer
import each other."""

import ast
from pathlib import Path

import volnet

HIGHER = ("volnet.models", "volnet.train", "volnet.commands", "volnet.web", "volnet.cli")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_io_imports_no_higher_floor():
    io = Path(volnet.__file__).parent / "io"
    upward = {f"{path.name}: {name}" for path in io.rglob("*.py") for name in _imports(path)
              if name.startswith(HIGHER)}
    assert not upward, sorted(upward)


def test_pretrained_lives_with_the_registry():
    import volnet.io
    from volnet.models import pretrained
    from volnet.models.registry import build

    assert pretrained.__module__ == build.__module__ == "volnet.models.registry"
    assert not hasattr(volnet.io, "pretrained")


def test_onnx_registry_is_a_leaf_and_no_ops_module_imports_the_importer():
    """The handlers and exporters register in volnet/io/onnx/registry.py, which imports nothing
    of the package; the modules that fill it import the registry, never the importer or the
    exporter (the circle of six files this package replaced)."""
    onnx_dir = Path(volnet.__file__).parent / "io" / "onnx"
    registry = {n for n in _imports(onnx_dir / "registry.py") if n.startswith("volnet.io")}
    assert not registry, registry
    for path in onnx_dir.glob("*.py"):
        if path.stem.startswith(("ops", "export_", "fold", "fuse")):
            bad = _imports(path) & {"volnet.io.onnx.importer", "volnet.io.onnx.export"}
            assert not bad, (path.name, bad)
