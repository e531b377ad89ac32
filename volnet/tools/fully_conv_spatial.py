"""FC -> CONV conversion, the CONV/POOL side: the rules for layers before ``Flatten``.

``tools/fully_conv.py`` walks the network and hands each layer that still sees a
(C, H, W) volume to :func:`convert_spatial`: CONV and POOL layers are copied and
multiply the total stride, global and adaptive pools become ``AvgPool2d`` at the
native input size, ``Flatten`` switches the walk to the rules in ``tools/fc_to_conv.py``.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from volnet.layers import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    GlobalAvgPool2d,
    Layer,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    Softmax,
)
from volnet.tools.fc_to_conv import WalkState, is_pointwise, refusal


def convert_spatial(layer: Layer, path: str, state: WalkState):
    """One layer of the walk while the volume is still spatial: (converted layer, next state)."""
    shape = state.shape
    if isinstance(layer, (Conv2d, MaxPool2d, AvgPool2d)):
        out = layer.output_shape(shape)
        exact = state.exact and layer.padding == (0, 0) and not _partial_window(layer, shape)
        stride = (state.stride[0] * layer.stride[0], state.stride[1] * layer.stride[1])
        return layer.copy(), replace(state, shape=out, stride=stride, exact=exact)
    if isinstance(layer, ConvTranspose2d):
        # slides like a convolution whose output units lie S times closer together; its
        # output near the borders depends on the input size (padding crops), so not exact
        stride = tuple(_integral(Fraction(a) / s) for a, s in zip(state.stride, layer.stride))
        return layer.copy(), replace(state, shape=layer.output_shape(shape), stride=stride,
                                     exact=False)
    if is_pointwise(layer) or isinstance(layer, (BatchNorm2d, LocalResponseNorm)):
        return layer.copy(), replace(state, shape=layer.output_shape(shape))
    if isinstance(layer, Softmax):
        if layer.dim != 1:
            raise refusal(layer, path, "a softmax over spatial positions has no sliding-window "
                                       "equivalent; use Softmax(dim=1) over channels")
        return layer.copy(), state
    if isinstance(layer, Flatten):
        return None, replace(state, mode="flat", shape=layer.output_shape(shape), volume=shape)
    if isinstance(layer, GlobalAvgPool2d):
        return _window_average(shape[1:], (1, 1), (1, 1), state)
    if isinstance(layer, AdaptiveAvgPool2d):
        return _convert_adaptive(layer, path, state)
    if isinstance(layer, Linear):
        raise refusal(layer, path, f"it receives a {shape} volume that was never flattened; "
                                   "insert Flatten() before it")
    raise refusal(layer, path, f"it is not known to act on each position of a {shape} volume "
                               "alone; only CONV, POOL, normalisation and elementwise layers can slide")


def _integral(value: Fraction):
    """An int where a stride is whole, else the Fraction (after upsampling)."""
    return int(value) if value.denominator == 1 else value


def _partial_window(layer: Layer, shape: tuple) -> bool:
    """True when ceil_mode adds a window that hangs over the edge at the native size."""
    if not getattr(layer, "ceil_mode", False):
        return False
    return any((size + 2 * p - k) % s != 0
               for size, k, s, p in zip(shape[1:], layer.kernel_size, layer.stride, layer.padding))


def _window_average(window: tuple, steps: tuple, out_hw: tuple, state: WalkState):
    """An AvgPool2d standing for a global or adaptive pool at the native size (None if 1x1)."""
    stride = (state.stride[0] * steps[0], state.stride[1] * steps[1])
    after = replace(state, shape=(state.shape[0],) + tuple(out_hw), stride=stride)
    if tuple(window) == (1, 1):
        return None, after
    return AvgPool2d(kernel_size=tuple(window), stride=tuple(steps)), after


def _convert_adaptive(layer: AdaptiveAvgPool2d, path: str, state: WalkState):
    size = state.shape[1:]
    window, steps = [], []
    for axis, (n, o) in enumerate(zip(size, layer.output_size)):
        if n % o:
            raise refusal(layer, path, f"at input_shape it averages a {size[0]}x{size[1]} map into "
                          f"{layer.output_size[0]}x{layer.output_size[1]} with uneven windows, which "
                          "change with the image size; choose an input_shape where its input is "
                          f"{layer.output_size[0]}x{layer.output_size[1]} (an identity) or a multiple of it")
        window.append(n // o)
        steps.append(n // o if o > 1 else 1)   # a single window may slide one step at a time
    # window 1x1: the identity at this input size (torchvision's VGG at 224) disappears
    return _window_average(tuple(window), tuple(steps), layer.output_size, state)
