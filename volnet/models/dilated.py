"""A dilated front-end for dense prediction (Yu & Koltun 2016, section 4), sized for the
64x64 digit scenes, with or without their basic context module.

Yu & Koltun took VGG-16, removed its last two pooling layers and dilated the
convolutions after them (by 2 after the first removed pool, by 4 after the
second), so the score maps keep a finer resolution (stride 8 instead of 32)
while every unit still sees what it saw in the classifier. The same recipe at
this scale: three blocks of two 3x3 convolutions, the first two each followed by a
2x2 max pool; where a classifier would pool once more and run the third block
undilated at stride 8, the third block runs at stride 4 with its convolutions
dilated by 2 (each still widens the field by 16 pixels, at twice the resolution);
a 1x1 convolution gives the class scores at stride 4 (16x16 maps for a 64x64
scene), which bilinear upsampling brings back to the input's size. With
``context=True`` the basic context module (dilations 1, 1, 2, 4, 8, 16, 1;
identity-initialised, :mod:`volnet.models.context`) refines the score maps
before the upsampling.

Receptive field of an output unit: 52x52 pixels for the front-end (the largest
digit is 42 pixels wide), 52 + 66 x 4 = 316 with the context module.
"""

from __future__ import annotations

from volnet.errors import ConfigError
from volnet.layers import Conv2d, MaxPool2d, ReLU, Sequential
from volnet.layers.upsample import Upsample
from volnet.models.context import context_module

WIDTHS = (16, 32, 32)
STRIDE = 4            # two pools: the score maps are 1/4 of the input's side


def dilated_frontend(num_classes: int = 11, in_channels: int = 1, seed=0,
                     context: bool = False, widths=WIDTHS) -> Sequential:
    """The front-end (``context=False``) or front-end + basic context module.

    Args:
        num_classes: K score maps (11 for the scenes: background and ten digits).
        in_channels: image channels.
        seed: weight seed.
        context: append the basic context module (K channels throughout).
        widths: channels of the three convolution blocks.

    Shape:
        (N, in_channels, H, W) -> (N, num_classes, H, W) for H, W divisible by 4.

    Example:
        >>> dilated_frontend().output_shape((1, 64, 64))
        (11, 64, 64)
    """
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"dilated: need num_classes and in_channels >= 1, got {num_classes}, "
                          f"{in_channels}")
    import numpy as np

    rng = np.random.default_rng(seed)
    a, b, c = widths
    layers = {
        "conv1_1": Conv2d(in_channels, a, 3, padding=1, rng=rng), "relu1_1": ReLU(),
        "conv1_2": Conv2d(a, a, 3, padding=1, rng=rng), "relu1_2": ReLU(),
        "pool1": MaxPool2d(2),
        "conv2_1": Conv2d(a, b, 3, padding=1, rng=rng), "relu2_1": ReLU(),
        "conv2_2": Conv2d(b, b, 3, padding=1, rng=rng), "relu2_2": ReLU(),
        "pool2": MaxPool2d(2),
        # no third pool: dilation 2 at stride 4 sees what 3x3 at stride 8 would
        "conv3_1": Conv2d(b, c, 3, padding=2, dilation=2, rng=rng), "relu3_1": ReLU(),
        "conv3_2": Conv2d(c, c, 3, padding=2, dilation=2, rng=rng), "relu3_2": ReLU(),
        "score": Conv2d(c, num_classes, 1, rng=rng),
    }
    if context:
        layers["context"] = context_module(num_classes, seed=rng)
    layers["upsample"] = Upsample(scale_factor=STRIDE, mode="bilinear")
    return Sequential(layers)


def dilated(num_classes: int = 11, in_channels: int = 1, seed=0) -> Sequential:
    """The dilated front-end alone (zoo name ``dilated``)."""
    return dilated_frontend(num_classes, in_channels, seed, context=False)


def dilated_context(num_classes: int = 11, in_channels: int = 1, seed=0) -> Sequential:
    """The dilated front-end with the basic context module (zoo name ``dilated_context``)."""
    return dilated_frontend(num_classes, in_channels, seed, context=True)
