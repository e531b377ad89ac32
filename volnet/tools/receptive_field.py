"""Receptive fields: how many input pixels one output unit sees, and how far apart units are.

The per-layer rules (windows, joins of branches, global pooling) live in
``tools/fields.py``; ``tools/walk.py`` applies them layer by layer, and this module
picks the field of the output or of one named layer. The names of ``fields.py``
are re-exported here, where a reader looks for them.

Example:
    >>> import volnet as vn
    >>> net = vn.Sequential(vn.Conv2d(3, 8, 3), vn.Conv2d(8, 8, 3, dilation=2))
    >>> receptive_field(net, (3, 16, 16)).size
    (7, 7)
"""

from __future__ import annotations

from volnet.errors import ConfigError, ShapeError
from volnet.tools.fields import (
    Field,
    join_fields,
    layer_field,
    whole_map_field,
    window_field,
)
from volnet.tools.walk import walk

__all__ = ["Field", "join_fields", "layer_field", "receptive_field", "whole_map_field",
           "window_field"]


def receptive_field(net, input_shape, layer: str | None = None) -> Field:
    """Receptive field of the output units of ``net`` (or of the layer at dotted path ``layer``).

    Computed from shapes and hyperparameters alone; no data runs.

    Args:
        net: any volnet layer or container.
        input_shape: per-example input shape (C, H, W).
        layer: dotted path of a layer inside ``net`` (e.g. ``"features.28"``); the
            net's output when None.

    Example:
        >>> import volnet as vn
        >>> net = vn.Sequential(vn.Conv2d(3, 4, 3, padding=1), vn.MaxPool2d(2))
        >>> receptive_field(net, (3, 8, 8))
        Field(size=(4, 4), jump=(2, 2), start=(0.5, 0.5))
    """
    records = walk(net, input_shape)
    if records[0].field is None:
        raise ShapeError(f"receptive_field needs an image-shaped input (C, H, W), got "
                         f"{tuple(input_shape)}")
    if layer is not None:
        found = [r for r in records if r.path == layer and not r.is_input]
        if not found:
            raise ConfigError(f"receptive_field: no layer named {layer!r}; names look like "
                              + ", ".join(repr(r.path) for r in records[1:4]))
        record = found[-1]      # a container's join record comes after its children
    else:
        record = records[-1]
    if record.field is None:
        unknown = next(r for r in records if r.field is None)
        raise ShapeError(f"receptive_field: cannot follow the field through "
                         f"{type(unknown.layer).__name__} at {unknown.path or 'the top'}, "
                         "which changes the spatial size without a kernel_size/stride")
    return record.field
