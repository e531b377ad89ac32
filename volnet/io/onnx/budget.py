"""The ONNX reader's memory budget (:mod:`volnet.limits`): nothing a file declares is
allocated before its size is known and checked.

A 152-byte file can ask constant folding for a 40000 x 40000 ``ConstantOfShape``, or declare
an input of 2^31 pixels. The importer asks this module first about every initializer (from
its declared dims, before its data is decoded), every declared or computed per-example shape
(an axis of 2^30 or more is refused outright, naming the node) and every folded result (its
size estimated from the inputs' shapes); constants are counted together, since they all
stay in memory until the import ends.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import CheckpointError, ConfigError
from volnet.io.onnx.attributes import refuse
from volnet.limits import check_budget, max_bytes

MAX_AXIS = 2 ** 30          # no CNN tensor has an axis this long; a file that says so is wrong
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


class Budget:
    """Counts what one import materialises against ``max_bytes`` (default: the global budget)."""

    def __init__(self, limit=None, source: str = "ONNX file") -> None:
        self.limit, self.source = max_bytes(limit), source
        self.constants = 0          # bytes of constants (initializers and folded values) so far

    def _add(self, nbytes: int, what: str) -> None:
        self.constants += int(nbytes)
        check_budget(self.constants, f"{self.source}: {what}", self.limit, CheckpointError)

    def initializer(self, tensor) -> None:
        """Count an initializer from its declared dims and element type, before decoding it."""
        dims = [int(d) for d in tensor.dims]
        if any(d < 0 or d >= MAX_AXIS for d in dims):
            raise CheckpointError(f"{self.source}: initializer {tensor.name!r} declares dims "
                                  f"{dims}; every axis must be between 0 and 2^30")
        size = int(np.prod(dims, dtype=object)) if dims else 1
        self._add(size * _ITEMSIZE.get(tensor.data_type, 8),
                  f"initializer {tensor.name!r} of shape {dims} (with the constants before it)")

    def folded(self, node, elements: int, itemsize: int) -> None:
        """Count the result of folding ``node`` before it is computed."""
        self._add(int(elements) * max(int(itemsize), 1),
                  f"folding node {node.name or node.output[0]!r} ({node.op_type})")

    def check_shape(self, node, shape) -> None:
        """A per-example shape a node produces: every axis below 2^30, one example within budget."""
        shape = tuple(int(d) for d in shape)
        if any(d < 0 or d >= MAX_AXIS for d in shape):
            raise refuse(node, "", f"its output would have shape (N, {', '.join(map(str, shape))})",
                         "an axis of 2^30 or more is not a CNN tensor: check the file's sizes, "
                         "pads and scales")
        size = int(np.prod(shape, dtype=object)) if shape else 1
        check_budget(size * 4, f"{self.source}: one example's output of node "
                     f"{node.name or node.output[0]!r} ({node.op_type}), shape {shape}",
                     self.limit, CheckpointError)

    def check_input(self, name: str, shape) -> None:
        """The graph input's per-example shape, as declared or given."""
        shape = tuple(int(d) for d in shape)
        if any(d <= 0 or d >= MAX_AXIS for d in shape):
            raise ConfigError(f"graph input {name!r} has per-example shape {list(shape)}; every "
                              "axis must be between 1 and 2^30 (pass input_shape=(C, H, W))")
        size = int(np.prod(shape, dtype=object)) if shape else 1
        check_budget(size * 4, f"{self.source}: one example of input {name!r}, shape {shape}",
                     self.limit, CheckpointError)


def fold_size(node, a: dict, inputs: list) -> tuple[int, int]:
    """(elements, bytes per element) an upper bound of what folding ``node`` allocates.

    Only the operators whose result can outgrow their inputs need a formula; the others
    (Gather of a slice, Reshape, Transpose, Slice, Squeeze...) return at most their input.
    """
    arrays = [x for x in inputs if isinstance(x, np.ndarray)]
    itemsize = np.result_type(*arrays).itemsize if arrays else 8
    op = node.op_type
    if op == "Cast":
        itemsize = 8                      # at most a 64-bit type
    if op == "ConstantOfShape":
        value = a.get("value")
        itemsize = value.dtype.itemsize if isinstance(value, np.ndarray) else 4
        dims = [int(d) for d in np.ravel(inputs[0])] if arrays else []
        if any(d < 0 or d >= MAX_AXIS for d in dims):
            raise refuse(node, "input", f"shape {dims}", "every axis must be between 0 and 2^30")
        return int(np.prod(dims, dtype=object)) if dims else 1, itemsize
    if op in ("Add", "Sub", "Mul", "Div") and len(arrays) == 2:
        try:
            shape = np.broadcast_shapes(arrays[0].shape, arrays[1].shape)
        except ValueError:
            return 0, itemsize            # folding reports the mismatch, naming the node
        return int(np.prod(shape, dtype=object)), itemsize
    if op == "Concat":
        return sum(x.size for x in arrays), itemsize
    if op == "Gather" and len(arrays) == 2:
        data, indices = arrays
        axis = a.get("axis", 0)
        axis = axis + data.ndim if axis < 0 else axis
        rows = data.shape[axis] if 0 <= axis < data.ndim else 1
        return (data.size // max(rows, 1)) * indices.size, itemsize
    return max([x.size for x in arrays] + [1]), itemsize
