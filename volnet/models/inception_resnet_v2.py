"""Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016): Inception modules with
residual connections, the lecture's "Inception-v4 (with residual)".

"Inception-v4, Inception-ResNet and the Impact of Residual Connections on
Learning": the schema for the Inception-ResNet networks and its v2 modules
(35x35 Inception-ResNet-A, 17x17 Inception-ResNet-B, Reduction-B, 8x8
Inception-ResNet-C). Each residual module concatenates its branches, maps them
back to the input depth with a 1x1 convolution (with bias, no batch norm, no
RELU: the "linear" 1x1 of the figures), scales the result by a constant
(section 3.3: 0.1 to 0.3 keeps the wide stacks from dying early in training)
and adds the input before a RELU.

Layout and state-dict keys follow the PyTorch port of Google's checkpoint,
Cadene's ``pretrainedmodels/models/inceptionresnetv2.py`` as kept by timm
(``inception_resnet_v2``): ``conv2d_1a.conv.weight``, ``mixed_5b.branch1.0.conv.weight``,
``repeat.0.branch2.2.bn.running_var``, ``repeat_1.19.conv2d.bias``,
``block8.conv2d.weight``, ``conv2d_7b.bn.bias``, ``classif.weight`` (timm's name for
the FC layer; Cadene's file calls it ``last_linear``). 55,843,464 parameters for
1000 classes, as the port.

The port follows Google's TF-slim graph, the one the published weights were
trained with, which differs from the paper's figures in widths: its stem is
Inception-v3's (to 35x35x192) followed by a 35x35 Inception module
(``mixed_5b``, 320 channels) instead of the figures' stem to 35x35x384; the
residual stacks are 320, 1088 and 2080 channels deep; a final 1x1
convolution (``conv2d_7b``) gives 1536 features; the residual scales are 0.17,
0.10 and 0.20, and the last 8x8 module (``block8``) has no RELU after its sum.
Block counts are the paper's: 10 x A, 20 x B, 10 x C (9 in ``repeat_2`` plus
``block8``).
"""

from __future__ import annotations

import numpy as np

from volnet.layers import (
    Concat,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Scale,
    Sequential,
)
from volnet.models.blocks import avg_pool_branch, basic_conv, conv_chain


def _residual(branches: dict, width: int, depth: int, scale: float, rng,
              relu: bool = True) -> Residual:
    """``relu(x + scale * conv2d(concat(branches)))``; keys ``branch0...``, ``conv2d.weight``."""
    body = Sequential({
        "": Concat(branches),                                # branch keys sit at the top level
        "conv2d": Conv2d(width, depth, 1, rng=rng),          # the linear 1x1, with bias
        "scale": Scale(scale),
    })
    return Residual(body, activation=ReLU() if relu else None, body_name="")


def mixed_5b(rng=None) -> Concat:
    """35x35x192 -> 35x35x320 (96 + 64 + 96 + 64), the port's last stem module."""
    return Concat({
        "branch0": basic_conv(192, 96, 1, rng=rng),
        "branch1": conv_chain(rng, (192, 48, 1, 1, 0), (48, 64, 5, 1, 2)),
        "branch2": conv_chain(rng, (192, 64, 1, 1, 0), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
        "branch3": avg_pool_branch(192, 64, rng),
    })


def block35(scale: float = 0.17, rng=None) -> Residual:
    """Inception-ResNet-A, 35x35x320 -> 35x35x320 (branches 32 + 32 + 64)."""
    return _residual({
        "branch0": basic_conv(320, 32, 1, rng=rng),
        "branch1": conv_chain(rng, (320, 32, 1, 1, 0), (32, 32, 3, 1, 1)),
        "branch2": conv_chain(rng, (320, 32, 1, 1, 0), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1)),
    }, 128, 320, scale, rng)


def mixed_6a(rng=None) -> Concat:
    """Reduction-A (k, l, m, n = 256, 256, 384, 384): 35x35x320 -> 17x17x1088."""
    return Concat({
        "branch0": basic_conv(320, 384, 3, stride=2, rng=rng),
        "branch1": conv_chain(rng, (320, 256, 1, 1, 0), (256, 256, 3, 1, 1), (256, 384, 3, 2, 0)),
        "branch2": MaxPool2d(3, stride=2),
    })


def block17(scale: float = 0.10, rng=None) -> Residual:
    """Inception-ResNet-B, 17x17x1088 -> 17x17x1088 (7x7 factorised into 1x7 and 7x1)."""
    return _residual({
        "branch0": basic_conv(1088, 192, 1, rng=rng),
        "branch1": conv_chain(rng, (1088, 128, 1, 1, 0), (128, 160, (1, 7), 1, (0, 3)),
                        (160, 192, (7, 1), 1, (3, 0))),
    }, 384, 1088, scale, rng)


def mixed_7a(rng=None) -> Concat:
    """Reduction-B: 17x17x1088 -> 8x8x2080 (384 + 288 + 320 + the 1088 pooled)."""
    return Concat({
        "branch0": conv_chain(rng, (1088, 256, 1, 1, 0), (256, 384, 3, 2, 0)),
        "branch1": conv_chain(rng, (1088, 256, 1, 1, 0), (256, 288, 3, 2, 0)),
        "branch2": conv_chain(rng, (1088, 256, 1, 1, 0), (256, 288, 3, 1, 1), (288, 320, 3, 2, 0)),
        "branch3": MaxPool2d(3, stride=2),
    })


def block8(scale: float = 0.20, rng=None, relu: bool = True) -> Residual:
    """Inception-ResNet-C, 8x8x2080 -> 8x8x2080 (3x3 factorised into 1x3 and 3x1)."""
    return _residual({
        "branch0": basic_conv(2080, 192, 1, rng=rng),
        "branch1": conv_chain(rng, (2080, 192, 1, 1, 0), (192, 224, (1, 3), 1, (0, 1)),
                        (224, 256, (3, 1), 1, (1, 0))),
    }, 448, 2080, scale, rng, relu)


def inception_resnet_v2(num_classes: int = 1000, in_channels: int = 3, seed=0,
                        drop_prob: float = 0.2) -> Sequential:
    """Inception-ResNet-v2 with the timm port's layout and keys.

    Args:
        num_classes: outputs of ``classif``.
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        drop_prob: dropout before the FC layer (the paper keeps 0.8; timm's default is 0).

    Shape:
        (N, C, 299, 299) -> 35x35x320 -> 17x17x1088 -> 8x8x2080 -> 8x8x1536
        -> (N, num_classes); inputs down to 75x75 work.

    Example:
        >>> inception_resnet_v2(num_classes=10).output_shape((3, 299, 299))
        (10,)
    """
    rng = np.random.default_rng(seed)
    return Sequential({
        "conv2d_1a": basic_conv(in_channels, 32, 3, stride=2, rng=rng),    # 149x149x32
        "conv2d_2a": basic_conv(32, 32, 3, rng=rng),                       # 147x147x32
        "conv2d_2b": basic_conv(32, 64, 3, padding=1, rng=rng),            # 147x147x64
        "maxpool_3a": MaxPool2d(3, stride=2),                              # 73x73x64
        "conv2d_3b": basic_conv(64, 80, 1, rng=rng),                       # 73x73x80
        "conv2d_4a": basic_conv(80, 192, 3, rng=rng),                      # 71x71x192
        "maxpool_5a": MaxPool2d(3, stride=2),                              # 35x35x192
        "mixed_5b": mixed_5b(rng),                                         # 35x35x320
        "repeat": Sequential(*[block35(0.17, rng) for _ in range(10)]),
        "mixed_6a": mixed_6a(rng),                                         # 17x17x1088
        "repeat_1": Sequential(*[block17(0.10, rng) for _ in range(20)]),
        "mixed_7a": mixed_7a(rng),                                         # 8x8x2080
        "repeat_2": Sequential(*[block8(0.20, rng) for _ in range(9)]),
        "block8": block8(1.0, rng, relu=False),
        "conv2d_7b": basic_conv(2080, 1536, 1, rng=rng),                   # 8x8x1536
        "global_pool": GlobalAvgPool2d(),
        "flatten": Flatten(),
        "head_drop": Dropout(drop_prob, rng=rng),
        "classif": Linear(1536, num_classes, rng=rng),
    })
