"""The dilated context module of Yu & Koltun (2016), "Multi-Scale Context Aggregation by
Dilated Convolutions", Table 1.

Seven 3x3 CONV layers with dilations 1, 1, 2, 4, 8, 16, 1 followed by a 1x1 CONV,
each but the last followed by a RELU. Resolution is kept (padding = dilation)
while the receptive field grows exponentially: 3, 5, 9, 17, 33, 65, 67 pixels.
The module maps C score maps to C refined maps; the basic module keeps C
channels everywhere, the large one widens to 2C, 2C, 4C, 8C, 16C, 32C, 32C.
Weights start as the paper's identity initialisation (Eq. 4/5), so an untrained
module passes its (non-negative) input through unchanged. Layer names follow
the authors' Caffe model (``ctx_conv1_1`` ... ``ctx_final``).
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import Conv2d, ReLU, Sequential

DILATIONS = (1, 1, 2, 4, 8, 16, 1)
NAMES = ("ctx_conv1_1", "ctx_conv1_2", "ctx_conv2_1", "ctx_conv3_1", "ctx_conv4_1",
         "ctx_conv5_1", "ctx_fc1", "ctx_final")
LARGE_MULTIPLIERS = (2, 2, 4, 8, 16, 32, 32)


def identity_init(conv: Conv2d, num_classes: int) -> None:
    """Yu & Koltun's Eq. 5: w[b, a, centre] = C / c_out where
    floor(a C / c_in) == floor(b C / c_out).

    With c_in == c_out == C this is Eq. 4, the identity (one 1 per filter, at the centre).
    """
    w = conv.params["weight"]
    c_out, c_in, kh, kw = w.shape
    w[...] = 0.0
    a = np.arange(c_in)[None, :] * num_classes // c_in
    b = np.arange(c_out)[:, None] * num_classes // c_out
    w[:, :, kh // 2, kw // 2] = (a == b) * (num_classes / c_out)
    if "bias" in conv.params:
        conv.params["bias"][...] = 0.0


def context_module(num_classes: int = 21, in_channels: int | None = None, seed=0,
                   large: bool = False, init: str = "identity") -> Sequential:
    """Yu & Koltun's context module: dilated 3x3 CONVs (1, 1, 2, 4, 8, 16, 1) and a 1x1 CONV.

    Args:
        num_classes: C, the number of score maps in and out (21 for PASCAL VOC).
        in_channels: depth of the input; defaults to ``num_classes``.
        seed: seed (or Generator) for He-normal weights when ``init="he"``.
        large: the large module (widths 2C ... 32C) instead of the basic one (C).
        init: ``"identity"`` (the paper's) or ``"he"`` (He-normal).

    Shape:
        (N, in_channels, H, W) -> (N, num_classes, H, W); receptive field 67x67.

    Example:
        >>> net = context_module(num_classes=4)
        >>> net.output_shape((4, 32, 32))
        (4, 32, 32)
        >>> x = np.random.default_rng(0).random((1, 4, 32, 32))
        >>> bool(np.allclose(net.forward(x), x))     # identity initialisation
        True
    """
    if init not in ("identity", "he"):
        raise ConfigError(f"context_module: init must be 'identity' or 'he', got {init!r}")
    if num_classes < 1:
        raise ConfigError(f"context_module: num_classes must be >= 1, got {num_classes}")
    rng = np.random.default_rng(seed)
    widths = [num_classes * m for m in LARGE_MULTIPLIERS] if large else [num_classes] * 7
    layers, channels = {}, in_channels or num_classes
    for i, (name, dilation, width) in enumerate(zip(NAMES, DILATIONS, widths)):
        layers[name] = Conv2d(channels, width, 3, padding=dilation, dilation=dilation, rng=rng)
        layers[f"ctx_relu{i + 1}"] = ReLU()
        channels = width
    layers[NAMES[-1]] = Conv2d(channels, num_classes, 1, rng=rng)
    net = Sequential(layers)
    if init == "identity":
        for name in NAMES:
            identity_init(net[name], num_classes)
    return net
