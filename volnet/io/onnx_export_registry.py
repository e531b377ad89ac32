"""The ONNX exporter registry: one converter per layer type, and the graph builder they share.

Converters register with :func:`register_onnx_exporter`; :func:`_emit` finds the one for a
layer's type (or nearest base class). The converters live in ``onnx_export_containers``,
``onnx_export_layers`` and ``onnx_export_ops``; ``volnet.io.onnx_export`` re-exports all this.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers.base import join_key

EXPORTERS: dict[type, callable] = {}


def register_onnx_exporter(layer_type: type):
    """Decorator: ``fn(layer, builder, x, shape, prefix) -> (output name, output shape)``."""
    def decorate(fn):
        EXPORTERS[layer_type] = fn
        return fn
    return decorate


class _Builder:
    """Accumulates ONNX nodes and initializers with unique tensor names."""

    def __init__(self, helper, numpy_helper) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.names = [], [], set()

    def fresh(self, hint: str) -> str:
        name, i = hint or "t", 1
        while name in self.names:
            name, i = f"{hint}_{i}", i + 1
        self.names.add(name)
        return name

    def const(self, name: str, array) -> str:
        name = self.fresh(name)
        array = np.asarray(array)
        array = np.ascontiguousarray(array) if array.ndim else array.copy()   # 0-d stays 0-d
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def param(self, layer, key: str, prefix: str) -> str:
        return self.const(join_key(prefix, key), np.asarray(layer.params.get(key, layer.buffers.get(key)),
                                                            dtype=np.float32))

    def node(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        out = self.fresh(f"/{prefix}/{op}" if prefix else op)   # PyTorch's scope naming
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _emit(layer, b: _Builder, x: str, shape: tuple, prefix: str):
    for cls in type(layer).__mro__:
        if cls in EXPORTERS:
            return EXPORTERS[cls](layer, b, x, shape, prefix)
    raise ConfigError(f"no ONNX exporter for {type(layer).__name__} at {prefix or 'the top level'}; "
                      "register one with volnet.io.onnx_export.register_onnx_exporter")
