"""GoogLeNet / Inception v1 (Szegedy et al. 2014), with torchvision's layout and keys.

Inception modules run four branches on the same volume (1x1; 1x1 -> 3x3;
1x1 -> "5x5"; 3x3 max pool -> 1x1) and concatenate their outputs along depth.
The top is global average pooling, dropout and one FC layer instead of
AlexNet's FC stack. As in torchvision (vision #906) the "5x5" branch uses a 3x3
kernel, which is what torchvision's weights need: 6,624,904 parameters without
the auxiliary heads, 13,004,888 with them. Keys: ``conv1.conv.weight``,
``inception3a.branch2.0.conv.weight``, ``aux1.fc1.weight``, ``fc.weight``.
"""

from __future__ import annotations

import numpy as np

from volnet.layers import (
    AdaptiveAvgPool2d,
    Concat,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from volnet.layers.side_branch import SideBranch
from volnet.models.blocks import basic_conv, unit_range_input

# in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj (Szegedy et al. 2014, Table 1)
INCEPTION_V1 = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def inception_module(in_ch, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj, rng=None) -> Concat:
    """One Inception (v1) module: four branches concatenated along depth.

    Example:
        >>> inception_module(*INCEPTION_V1["inception3a"]).output_shape((192, 28, 28))
        (256, 28, 28)
    """
    return Concat({
        "branch1": basic_conv(in_ch, ch1x1, 1, rng=rng),
        "branch2": Sequential(basic_conv(in_ch, ch3x3red, 1, rng=rng),
                              basic_conv(ch3x3red, ch3x3, 3, padding=1, rng=rng)),
        "branch3": Sequential(basic_conv(in_ch, ch5x5red, 1, rng=rng),
                              basic_conv(ch5x5red, ch5x5, 3, padding=1, rng=rng)),
        "branch4": Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                              basic_conv(in_ch, pool_proj, 1, rng=rng)),
    })


def aux_head(in_ch: int, num_classes: int, rng=None, drop_prob: float = 0.7) -> SideBranch:
    """GoogLeNet's auxiliary classifier: 4x4 average pool, 1x1 CONV 128, FC 1024, FC."""
    return SideBranch(Sequential({
        "avgpool": AdaptiveAvgPool2d(4),
        "conv": basic_conv(in_ch, 128, 1, rng=rng),
        "flatten": Flatten(),
        "fc1": Linear(2048, 1024, rng=rng),
        "relu": ReLU(),
        "dropout": Dropout(drop_prob, rng=rng),
        "fc2": Linear(1024, num_classes, rng=rng),
    }))


def googlenet(num_classes: int = 1000, in_channels: int = 3, seed=0, aux_logits: bool = False,
              drop_prob: float = 0.2,
              transform_input: bool = False) -> Sequential:
    """GoogLeNet (Inception v1) with torchvision's layout and state-dict keys.

    Args:
        num_classes: outputs of the final FC layer (and of the auxiliary heads).
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        aux_logits: add the two auxiliary classifiers (``aux1`` after inception4a,
            ``aux2`` after inception4d) as :class:`SideBranch` layers.
        drop_prob: dropout before the final FC layer (torchvision: 0.2).
        transform_input: start with torchvision's ``transform_input`` (a
            :class:`volnet.layers.ChannelAffine`, no keys); torchvision turns it on
            with pretrained weights.

    Shape:
        (N, C, 224, 224) -> 112 -> 56 -> 28 (3a, 3b) -> 14 (4a-4e) -> 7 (5a, 5b)
        -> global average pool 1x1x1024 -> (N, num_classes). Pools use ``ceil_mode``.

    Example:
        >>> googlenet(num_classes=10).output_shape((3, 224, 224))
        (10,)
    """
    rng = np.random.default_rng(seed)
    layers = {}
    if transform_input:
        layers["transform_input"] = unit_range_input(in_channels)
    layers.update({
        "conv1": basic_conv(in_channels, 64, 7, stride=2, padding=3, rng=rng),   # 112x112x64
        "maxpool1": MaxPool2d(3, stride=2, ceil_mode=True),                     # 56x56x64
        "conv2": basic_conv(64, 64, 1, rng=rng),
        "conv3": basic_conv(64, 192, 3, padding=1, rng=rng),                    # 56x56x192
        "maxpool2": MaxPool2d(3, stride=2, ceil_mode=True),                     # 28x28x192
    })
    for name, config in INCEPTION_V1.items():
        layers[name] = inception_module(*config, rng=rng)
        if name == "inception3b":
            layers["maxpool3"] = MaxPool2d(3, stride=2, ceil_mode=True)        # 14x14x480
        if name == "inception4e":
            layers["maxpool4"] = MaxPool2d(2, stride=2, ceil_mode=True)        # 7x7x832
        if aux_logits and name in ("inception4a", "inception4d"):
            aux_name = "aux1" if name == "inception4a" else "aux2"
            layers[aux_name] = aux_head(512 if aux_name == "aux1" else 528, num_classes, rng)
    layers.update({
        "avgpool": GlobalAvgPool2d(),                                           # 1x1x1024
        "flatten": Flatten(),
        "dropout": Dropout(drop_prob, rng=rng),
        "fc": Linear(1024, num_classes, rng=rng),
    })
    return Sequential(layers)
