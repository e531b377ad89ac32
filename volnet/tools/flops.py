"""The lecture's per-layer arithmetic: multiply-adds and parameters without sharing.

A CONV unit computes one dot product of its filter with its input window, so a
layer does ``H_out * W_out * K * (C / groups * F * F)`` multiply-adds; an FC layer
``in_features * out_features`` per example. Biases, pooling, ReLU and batch norm
are not counted, which is how torchvision's "GFLOPS" column (really multiply-adds)
is computed: VGG-16 15.47 G, ResNet-50 4.09 G.

Example:
    >>> import volnet as vn
    >>> conv1 = vn.Conv2d(3, 96, 11, stride=4)                  # AlexNet conv1
    >>> layer_macs(conv1, (96, 55, 55))
    105415200
    >>> params_without_sharing(conv1, (96, 55, 55))            # 290,400 neurons x 364
    105705600
"""

from __future__ import annotations

import math


def _weight(layer):
    params = getattr(layer, "params", {})
    return params.get("weight")


def layer_macs(layer, output_shape) -> int:
    """Multiply-adds of one example through a leaf layer (0 for layers without a weight matrix)."""
    w = _weight(layer)
    if w is None or w.ndim not in (2, 4):
        return 0
    fan_in = math.prod(w.shape[1:])          # C/groups * KH * KW, or in_features
    if getattr(layer, "transposed", False):
        # every input unit scatters one (C_out/groups, KH, KW) filter copy, scaled by its value
        return _transposed_inputs(layer, output_shape) * fan_in
    return math.prod(output_shape) * fan_in


def _transposed_inputs(layer, output_shape) -> int:
    """Input units of a transposed convolution, recovered from its output size."""
    _, ho, wo = output_shape
    sizes = [(out - 1 + 2 * p - d * (k - 1) - op) // s + 1 for out, p, d, k, op, s in
             zip((ho, wo), layer.padding, layer.dilation, layer.kernel_size,
                 layer.output_padding, layer.stride)]
    return layer.in_channels * sizes[0] * sizes[1]


def params_without_sharing(layer, output_shape) -> int:
    """Parameters if every CONV output neuron had its own filter and bias (lecture's count).

    Equal to the layer's parameter count for layers without spatial sharing.
    """
    w = _weight(layer)
    own = sum(int(v.size) for v in getattr(layer, "params", {}).values())
    if w is None or w.ndim != 4 or len(output_shape) != 3:
        return own
    if getattr(layer, "transposed", False):
        # one weight per (input unit, output tap) pair, one bias per output unit
        bias = math.prod(output_shape) if "bias" in layer.params else 0
        return layer_macs(layer, output_shape) + bias
    per_neuron = math.prod(w.shape[1:]) + (1 if "bias" in layer.params else 0)
    return math.prod(output_shape) * per_neuron
