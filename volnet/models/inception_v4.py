"""Inception v4 (Szegedy, Ioffe, Vanhoucke & Alemi 2016), the lecture's last case study.

"Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning", Figures 3-9: a stem (Fig. 3) to 35x35x384, 4 x Inception-A,
Reduction-A (k, l, m, n = 192, 224, 256, 384) to 17x17x1024, 7 x Inception-B,
Reduction-B to 8x8x1536, 3 x Inception-C, global average pooling, dropout
(keep 0.8) and one FC layer. Batch norm (eps 0.001) follows every CONV.

Layout and state-dict keys follow the reference PyTorch port of the Google
checkpoint, Cadene's ``pretrainedmodels/models/inceptionv4.py`` (also timm's
``inception_v4``): ``features.0.conv.weight``, ``features.6.branch1.0.conv.weight``,
``features.21.branch1_1a.conv.weight``, ``last_linear.weight``.
42,679,816 parameters for 1000 classes (timm lists 42.7 M).
"""

from __future__ import annotations

import numpy as np

from volnet.layers import (
    Concat,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Sequential,
)
from volnet.layers.flat_concat import FlatConcat
from volnet.models.blocks import avg_pool_branch, basic_conv, conv_chain


def stem(in_channels: int, rng=None) -> list:
    """Figure 3: 299x299x3 -> 35x35x384 (features.0 to features.5)."""
    return [
        basic_conv(in_channels, 32, 3, stride=2, rng=rng),                      # 149x149x32
        basic_conv(32, 32, 3, rng=rng),                                         # 147x147x32
        basic_conv(32, 64, 3, padding=1, rng=rng),                              # 147x147x64
        Concat({"maxpool": MaxPool2d(3, stride=2),                              # 73x73x160
                "conv": basic_conv(64, 96, 3, stride=2, rng=rng)}),
        Concat({"branch0": conv_chain(rng, (160, 64, 1, 1, 0), (64, 96, 3, 1, 0)),    # 71x71x192
                "branch1": conv_chain(rng, (160, 64, 1, 1, 0), (64, 64, (1, 7), 1, (0, 3)),
                                (64, 64, (7, 1), 1, (3, 0)), (64, 96, 3, 1, 0))}),
        Concat({"conv": basic_conv(192, 192, 3, stride=2, rng=rng),             # 35x35x384
                "maxpool": MaxPool2d(3, stride=2)}),
    ]


def inception_a(rng=None) -> Concat:
    """Figure 4: 35x35x384 -> 35x35x384."""
    return Concat({
        "branch0": basic_conv(384, 96, 1, rng=rng),
        "branch1": conv_chain(rng, (384, 64, 1, 1, 0), (64, 96, 3, 1, 1)),
        "branch2": conv_chain(rng, (384, 64, 1, 1, 0), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
        "branch3": avg_pool_branch(384, 96, rng),
    })


def reduction_a(rng=None, k=192, l=224, m=256, n=384) -> Concat:
    """Figure 7: 35x35x384 -> 17x17x1024 (k, l, m, n from Table 1 for Inception-v4)."""
    return Concat({
        "branch0": basic_conv(384, n, 3, stride=2, rng=rng),
        "branch1": conv_chain(rng, (384, k, 1, 1, 0), (k, l, 3, 1, 1), (l, m, 3, 2, 0)),
        "branch2": MaxPool2d(3, stride=2),
    })


def inception_b(rng=None) -> Concat:
    """Figure 5: 17x17x1024 -> 17x17x1024, 7x7 factorised into 1x7 and 7x1."""
    return Concat({
        "branch0": basic_conv(1024, 384, 1, rng=rng),
        "branch1": conv_chain(rng, (1024, 192, 1, 1, 0), (192, 224, (1, 7), 1, (0, 3)),
                        (224, 256, (7, 1), 1, (3, 0))),
        "branch2": conv_chain(rng, (1024, 192, 1, 1, 0), (192, 192, (7, 1), 1, (3, 0)),
                        (192, 224, (1, 7), 1, (0, 3)), (224, 224, (7, 1), 1, (3, 0)),
                        (224, 256, (1, 7), 1, (0, 3))),
        "branch3": avg_pool_branch(1024, 128, rng),
    })


def reduction_b(rng=None) -> Concat:
    """Figure 8: 17x17x1024 -> 8x8x1536."""
    return Concat({
        "branch0": conv_chain(rng, (1024, 192, 1, 1, 0), (192, 192, 3, 2, 0)),
        "branch1": conv_chain(rng, (1024, 256, 1, 1, 0), (256, 256, (1, 7), 1, (0, 3)),
                        (256, 320, (7, 1), 1, (3, 0)), (320, 320, 3, 2, 0)),
        "branch2": MaxPool2d(3, stride=2),
    })


def _split(name: str, in_ch: int, rng) -> FlatConcat:
    """1x3 | 3x1 on the same volume, concatenated (keys ``<name>a``, ``<name>b``)."""
    return FlatConcat({
        "a": Sequential({f"{name}a": basic_conv(in_ch, 256, (1, 3), padding=(0, 1), rng=rng)}),
        "b": Sequential({f"{name}b": basic_conv(in_ch, 256, (3, 1), padding=(1, 0), rng=rng)}),
    })


def inception_c(rng=None) -> FlatConcat:
    """Figure 6: 8x8x1536 -> 8x8x1536 with split 1x3/3x1 outputs (256 + 512 + 512 + 256)."""
    return FlatConcat({
        "0": Sequential({"branch0": basic_conv(1536, 256, 1, rng=rng)}),
        "1": Sequential({"branch1_0": basic_conv(1536, 384, 1, rng=rng),
                         "": _split("branch1_1", 384, rng)}),
        "2": Sequential({"branch2_0": basic_conv(1536, 384, 1, rng=rng),
                         "branch2_1": basic_conv(384, 448, (3, 1), padding=(1, 0), rng=rng),
                         "branch2_2": basic_conv(448, 512, (1, 3), padding=(0, 1), rng=rng),
                         "": _split("branch2_3", 512, rng)}),
        "3": Sequential({"branch3": avg_pool_branch(1536, 256, rng)}),
    })


def inception_v4(num_classes: int = 1000, in_channels: int = 3, seed=0,
                 drop_prob: float = 0.2) -> Sequential:
    """Inception v4 with the reference port's layout and keys.

    Args:
        num_classes: outputs of ``last_linear``.
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        drop_prob: dropout before the FC layer (the paper keeps 0.8).

    Shape:
        (N, C, 299, 299) -> 35x35x384 -> 17x17x1024 -> 8x8x1536 -> (N, num_classes);
        inputs down to 75x75 work.

    Example:
        >>> inception_v4(num_classes=10).output_shape((3, 299, 299))
        (10,)
    """
    rng = np.random.default_rng(seed)
    blocks = stem(in_channels, rng)
    blocks += [inception_a(rng) for _ in range(4)] + [reduction_a(rng)]
    blocks += [inception_b(rng) for _ in range(7)] + [reduction_b(rng)]
    blocks += [inception_c(rng) for _ in range(3)]
    return Sequential({
        "features": Sequential(*blocks),
        "avg_pool": GlobalAvgPool2d(),                                          # 1x1x1536
        "flatten": Flatten(),
        "dropout": Dropout(drop_prob, rng=rng),
        "last_linear": Linear(1536, num_classes, rng=rng),
    })
