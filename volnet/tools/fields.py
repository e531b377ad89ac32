"""Receptive-field arithmetic, one layer at a time: how many input pixels one unit sees.

For a chain of windows (CONV or POOL) with kernel F, stride S, padding P and
dilation D, along each axis (Araujo et al. 2019, "Computing receptive fields"):

    size' = size + D * (F - 1) * jump      jump' = jump * S
    start' = start + (D * (F - 1) / 2 - P) * jump

where ``jump`` is the distance in input pixels between adjacent output units
(the stride product) and ``start`` the centre of the first unit's field.
Branches (``Concat``, ``Residual``) must agree on the jump; the joined field
is the largest of theirs. Global pooling and Flatten -> FC see the whole map.

``tools/walk.py`` applies these rules layer by layer; ``tools/receptive_field.py``
answers the question for a whole network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from volnet.errors import ShapeError
from volnet.functional.pool import adaptive_max_window


@dataclass(frozen=True)
class Field:
    """Receptive field of the units of one volume, per axis (height, width).

    Attributes:
        size: input pixels one unit sees (can exceed the image: padding counts).
        jump: input pixels between adjacent units (the product of strides).
        start: input coordinate of the centre of the first unit's field
            (pixel centres at 0, 1, ...; negative when padding shifts it left).
    """

    size: tuple[int, int] = (1, 1)
    jump: tuple[int, int] = (1, 1)
    start: tuple[float, float] = (0.0, 0.0)

    def __str__(self) -> str:
        return f"{_fmt(self.size)} (jump {_fmt(self.jump)})"


def _fmt(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def window_field(field: Field, kernel_size, stride, padding=(0, 0), dilation=(1, 1)) -> Field:
    """The field after a sliding window (CONV or POOL), per axis.

    Example:
        >>> window_field(Field(), (11, 11), (4, 4))        # AlexNet conv1
        Field(size=(11, 11), jump=(4, 4), start=(5.0, 5.0))
    """
    size, jump, start = [], [], []
    for i in range(2):
        span = dilation[i] * (kernel_size[i] - 1)
        size.append(field.size[i] + span * field.jump[i])
        start.append(field.start[i] + (span / 2 - padding[i]) * field.jump[i])
        jump.append(field.jump[i] * stride[i])
    return Field(tuple(size), tuple(jump), tuple(start))


def transposed_window_field(field: Field, kernel_size, stride, padding=(0, 0),
                            dilation=(1, 1)) -> Field:
    """The field after a transposed convolution (``ConvTranspose2d``), per axis.

    Output unit o receives input units i with ``i*S - P + k*D = o`` for a tap k, so
    it sees the units of an interval D(F - 1)/S input units long: at most
    ``floor(D(F - 1)/S) + 1`` of them (the size below is that largest field). Output
    units lie S times closer than input units: the jump shrinks to ``jump / S``
    (a fraction of an input pixel once the net has upsampled past its input; the
    size is then rounded up to whole pixels).

    Example:
        >>> transposed_window_field(Field(), (4, 4), (2, 2), (1, 1))   # DCGAN's 4/2/1 layer
        Field(size=(2, 2), jump=(0.5, 0.5), start=(-0.25, -0.25))
    """
    size, jump, start = [], [], []
    for i in range(2):
        span = dilation[i] * (kernel_size[i] - 1)
        size.append(math.ceil(field.size[i] + (span // stride[i]) * field.jump[i]))
        # centre of the inputs of output 0: i in [(P - span)/S, P/S]
        start.append(field.start[i] + (padding[i] - span / 2) / stride[i] * field.jump[i])
        step = field.jump[i] / stride[i]
        jump.append(int(step) if float(step).is_integer() else step)
    return Field(tuple(size), tuple(jump), tuple(start))


def resize_field(field: Field, spatial_in, spatial_out, mode: str) -> Field:
    """The field after ``Upsample`` (align_corners=False), per axis.

    A nearest-neighbour output unit copies one input unit (same size); a bilinear
    one blends two neighbours (one jump more). Units lie out/in times closer.

    Example:
        >>> resize_field(Field(), (7, 7), (14, 14), "bilinear")
        Field(size=(2, 2), jump=(0.5, 0.5), start=(0.0, 0.0))
    """
    size, jump, start = [], [], []
    for i in range(2):
        scale = spatial_in[i] / spatial_out[i]          # input units per output unit
        extra = field.jump[i] if mode == "bilinear" else 0
        size.append(math.ceil(field.size[i] + extra))
        first = max(0.5 * scale - 0.5, 0.0) if mode == "bilinear" else 0.0
        start.append(field.start[i] + first * field.jump[i])
        step = field.jump[i] * scale
        jump.append(int(step) if float(step).is_integer() else step)
    return Field(tuple(size), tuple(jump), tuple(start))


def join_fields(fields: list[Field], where: str) -> Field:
    """Fields of parallel branches joined by a sum or concatenation: the largest one.

    Raises:
        ShapeError: when the branches' jumps differ (their units would not line up).
    """
    jumps = {f.jump for f in fields}
    if len(jumps) != 1:
        raise ShapeError(f"{where}: branches disagree on the receptive-field jump (stride "
                         f"product): {sorted(jumps)}; their output units do not line up")
    return max(fields, key=lambda f: (f.size[0] * f.size[1], f.size))


def whole_map_field(field: Field, spatial) -> Field:
    """Field of a unit that sees every position of a (H, W) map (global pool, Flatten->FC).

    A window of the full map with stride 1, as when FC layers become CONV layers:
    the jump between units stays the network's total stride.
    """
    return window_field(field, tuple(spatial), (1, 1))


def layer_field(layer, input_shape, output_shape, field: Field | None) -> Field | None:
    """The field after one leaf layer, or None where it cannot be known.

    Windows are recognised by their ``kernel_size``/``stride``/``padding``
    attributes (Conv2d, MaxPool2d, AvgPool2d and any layer that has them).
    """
    if field is None:
        return None
    spatial_in = tuple(input_shape[1:]) if len(input_shape) == 3 else None
    spatial_out = tuple(output_shape[1:]) if len(output_shape) == 3 else None
    if spatial_in is not None and getattr(layer, "transposed", False):
        return transposed_window_field(field, layer.kernel_size, layer.stride, layer.padding,
                                       layer.dilation)
    if spatial_in is not None and hasattr(layer, "scale_factor") and hasattr(layer, "mode"):
        return resize_field(field, spatial_in, spatial_out, layer.mode)
    if spatial_in is not None and hasattr(layer, "kernel_size") and hasattr(layer, "stride"):
        return window_field(field, layer.kernel_size, layer.stride,
                            getattr(layer, "padding", (0, 0)), getattr(layer, "dilation", (1, 1)))
    if spatial_in is None or spatial_in == spatial_out:
        return field                        # elementwise, norm, FC on vectors
    if spatial_out == (1, 1) or spatial_out is None:
        return whole_map_field(field, spatial_in)   # global pooling, Flatten
    output_size = getattr(layer, "output_size", None)   # AdaptiveAvgPool2d
    if output_size is not None:
        # adaptive windows vary in length; the longest bounds the field
        kernel = tuple(adaptive_max_window(spatial_in[i], output_size[i]) for i in range(2))
        stride = tuple(max(1, spatial_in[i] // output_size[i]) for i in range(2))
        return window_field(field, kernel, stride)
    return None
