"""The ONNX tables, in a leaf module: which function imports, folds or exports what.

Three tables, one per direction, each filled by a decorator where the function lives:

* :data:`HANDLERS` (``@handles("Op")``): ONNX operator -> ``fn(importer, node, attrs)`` that
  appends volnet layers (``ops*.py``);
* :data:`FOLDERS` (``@folds("Op")``): ONNX operator -> ``fn(node, attrs, inputs, opset)``
  evaluating a node whose inputs are all constants (``fold.py``);
* :data:`EXPORTERS` (``@register_onnx_exporter(LayerType)``): layer type ->
  ``fn(layer, builder, x, shape, prefix) -> (output name, output shape)`` (``export_*.py``).

The importer and the exporter import the modules that fill the tables; those modules import
only this one, so no import circle runs through the package.
"""

from __future__ import annotations

from volnet.errors import ConfigError

OPSETS = range(7, 29)   # 7-21 as CNN files use them; 22-28 changed only element types here
HANDLERS: dict = {}
FOLDERS: dict = {}
EXPORTERS: dict[type, callable] = {}


def handles(*ops: str):
    """Decorator: ``fn(importer, node, attrs)`` builds the layers for ONNX operators ``ops``."""
    def decorate(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return decorate


def folds(*ops: str):
    """Decorator: ``fn(node, a, inputs, opset) -> list of output arrays`` for ``ops``."""
    def decorate(fn):
        for op in ops:
            FOLDERS[op] = fn
        return fn
    return decorate


def register_onnx_exporter(layer_type: type):
    """Decorator: ``fn(layer, builder, x, shape, prefix) -> (output name, output shape)``."""
    def decorate(fn):
        EXPORTERS[layer_type] = fn
        return fn
    return decorate


def emit(layer, b, x, shape, prefix: str):
    """Append the ONNX nodes of ``layer`` (its type's exporter, or its nearest base class's)."""
    for cls in type(layer).__mro__:
        if cls in EXPORTERS:
            return EXPORTERS[cls](layer, b, x, shape, prefix)
    raise ConfigError(f"no ONNX exporter for {type(layer).__name__} at {prefix or 'the top level'}; "
                      "register one with volnet.io.register_onnx_exporter")
