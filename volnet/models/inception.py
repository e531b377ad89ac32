"""Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture"), torchvision's.

The modules factorise large filters: a 5x5 becomes two stacked 3x3s (InceptionA),
an n x n becomes 1 x n then n x 1 (InceptionC with n = 7, InceptionE's split
1x3 / 3x1 outputs), and grid reductions run a stride-2 CONV beside a stride-2
pool (InceptionB, InceptionD). 299x299 input; 27,161,264 parameters with the
auxiliary head (torchvision's count), keys ``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.conv.weight``, ``AuxLogits.conv0.conv.weight``.
Inception v4 lives in ``inception_v4.py``.
"""

from __future__ import annotations

import numpy as np

from volnet.layers import (
    AvgPool2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    Sequential,
)
from volnet.layers.flat_concat import FlatConcat
from volnet.layers.side_branch import SideBranch
from volnet.models.blocks import basic_conv, unit_range_input


def _chain(rng, *specs) -> Sequential:
    """Named basic convs in a row: specs are (name, in, out, kernel, stride, padding)."""
    return Sequential({name: basic_conv(i, o, k, stride=s, padding=p, rng=rng)
                       for name, i, o, k, s, p in specs})


def _pool_branch(in_ch: int, out_ch: int, rng) -> Sequential:
    # 3x3 average pool, stride 1, pad 1 (zeros counted, as F.avg_pool2d's default), then 1x1
    return Sequential({"avg_pool": AvgPool2d(3, stride=1, padding=1),
                       "branch_pool": basic_conv(in_ch, out_ch, 1, rng=rng)})


def inception_a(in_ch: int, pool_features: int, rng=None) -> FlatConcat:
    """35x35 module: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1."""
    return FlatConcat({
        "1x1": _chain(rng, ("branch1x1", in_ch, 64, 1, 1, 0)),
        "5x5": _chain(rng, ("branch5x5_1", in_ch, 48, 1, 1, 0), ("branch5x5_2", 48, 64, 5, 1, 2)),
        "3x3dbl": _chain(rng, ("branch3x3dbl_1", in_ch, 64, 1, 1, 0),
                         ("branch3x3dbl_2", 64, 96, 3, 1, 1), ("branch3x3dbl_3", 96, 96, 3, 1, 1)),
        "pool": _pool_branch(in_ch, pool_features, rng),
    })


def inception_b(in_ch: int, rng=None) -> FlatConcat:
    """35 -> 17 grid reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2."""
    return FlatConcat({
        "3x3": _chain(rng, ("branch3x3", in_ch, 384, 3, 2, 0)),
        "3x3dbl": _chain(rng, ("branch3x3dbl_1", in_ch, 64, 1, 1, 0),
                         ("branch3x3dbl_2", 64, 96, 3, 1, 1), ("branch3x3dbl_3", 96, 96, 3, 2, 0)),
        "pool": Sequential({"max_pool": MaxPool2d(3, stride=2)}),
    })


def inception_c(in_ch: int, c7: int, rng=None) -> FlatConcat:
    """17x17 module with 7x7 factorised into 1x7 and 7x1."""
    return FlatConcat({
        "1x1": _chain(rng, ("branch1x1", in_ch, 192, 1, 1, 0)),
        "7x7": _chain(rng, ("branch7x7_1", in_ch, c7, 1, 1, 0),
                      ("branch7x7_2", c7, c7, (1, 7), 1, (0, 3)),
                      ("branch7x7_3", c7, 192, (7, 1), 1, (3, 0))),
        "7x7dbl": _chain(rng, ("branch7x7dbl_1", in_ch, c7, 1, 1, 0),
                         ("branch7x7dbl_2", c7, c7, (7, 1), 1, (3, 0)),
                         ("branch7x7dbl_3", c7, c7, (1, 7), 1, (0, 3)),
                         ("branch7x7dbl_4", c7, c7, (7, 1), 1, (3, 0)),
                         ("branch7x7dbl_5", c7, 192, (1, 7), 1, (0, 3))),
        "pool": _pool_branch(in_ch, 192, rng),
    })


def inception_d(in_ch: int, rng=None) -> FlatConcat:
    """17 -> 8 grid reduction."""
    return FlatConcat({
        "3x3": _chain(rng, ("branch3x3_1", in_ch, 192, 1, 1, 0),
                      ("branch3x3_2", 192, 320, 3, 2, 0)),
        "7x7x3": _chain(rng, ("branch7x7x3_1", in_ch, 192, 1, 1, 0),
                        ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
                        ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
                        ("branch7x7x3_4", 192, 192, 3, 2, 0)),
        "pool": Sequential({"max_pool": MaxPool2d(3, stride=2)}),
    })


def _split(name: str, in_ch: int, rng) -> FlatConcat:
    """The 1x3 | 3x1 pair whose outputs are concatenated (expanded filter bank)."""
    return FlatConcat({
        "a": _chain(rng, (f"{name}a", in_ch, 384, (1, 3), 1, (0, 1))),
        "b": _chain(rng, (f"{name}b", in_ch, 384, (3, 1), 1, (1, 0))),
    })


def inception_e(in_ch: int, rng=None) -> FlatConcat:
    """8x8 module with expanded (split) 3x3 outputs: 320 + 768 + 768 + 192 = 2048."""
    # the split pair is spliced ("") so its keys read branch3x3_2a, as in torchvision
    three = Sequential({"branch3x3_1": basic_conv(in_ch, 384, 1, rng=rng),
                        "": _split("branch3x3_2", 384, rng)})
    double = Sequential({"branch3x3dbl_1": basic_conv(in_ch, 448, 1, rng=rng),
                         "branch3x3dbl_2": basic_conv(448, 384, 3, padding=1, rng=rng),
                         "": _split("branch3x3dbl_3", 384, rng)})
    return FlatConcat({
        "1x1": _chain(rng, ("branch1x1", in_ch, 320, 1, 1, 0)),
        "3x3": three,
        "3x3dbl": double,
        "pool": _pool_branch(in_ch, 192, rng),
    })


def inception_aux(in_ch: int, num_classes: int, rng=None) -> SideBranch:
    """Auxiliary head on the 17x17x768 grid: 5x5/3 average pool, 1x1 CONV 128, 5x5 CONV 768, FC."""
    return SideBranch(Sequential({
        "avg_pool": AvgPool2d(5, stride=3),                       # 5x5x768
        "conv0": basic_conv(in_ch, 128, 1, rng=rng),
        "conv1": basic_conv(128, 768, 5, rng=rng),                # 1x1x768
        "global_pool": GlobalAvgPool2d(),
        "flatten": Flatten(),
        "fc": Linear(768, num_classes, rng=rng),
    }))


def inception_v3(num_classes: int = 1000, in_channels: int = 3, seed=0, aux_logits: bool = True,
                 drop_prob: float = 0.5,
                 transform_input: bool = False) -> Sequential:
    """Inception v3 with torchvision's layout and keys (``transform_input`` off, as untrained).

    Args:
        num_classes: outputs of the final FC layer (and of the auxiliary head).
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        aux_logits: include ``AuxLogits`` (a :class:`SideBranch` after Mixed_6e), as
            torchvision does by default.
        drop_prob: dropout before the final FC layer.
        transform_input: start with torchvision's ``transform_input`` (a
            :class:`volnet.layers.ChannelAffine`, no keys); torchvision turns it on
            with pretrained weights.

    Shape:
        (N, C, 299, 299) -> 35x35x288 (Mixed_5d) -> 17x17x768 (Mixed_6e) -> 8x8x2048
        (Mixed_7c) -> global average pool -> (N, num_classes). Inputs down to 75x75 work.

    Example:
        >>> inception_v3(num_classes=10).output_shape((3, 299, 299))
        (10,)
    """
    rng = np.random.default_rng(seed)
    layers = {}
    if transform_input:
        layers["transform_input"] = unit_range_input(in_channels)
    layers.update({
        "Conv2d_1a_3x3": basic_conv(in_channels, 32, 3, stride=2, rng=rng),    # 149x149x32
        "Conv2d_2a_3x3": basic_conv(32, 32, 3, rng=rng),                       # 147x147x32
        "Conv2d_2b_3x3": basic_conv(32, 64, 3, padding=1, rng=rng),            # 147x147x64
        "maxpool1": MaxPool2d(3, stride=2),                                    # 73x73x64
        "Conv2d_3b_1x1": basic_conv(64, 80, 1, rng=rng),
        "Conv2d_4a_3x3": basic_conv(80, 192, 3, rng=rng),                      # 71x71x192
        "maxpool2": MaxPool2d(3, stride=2),                                    # 35x35x192
        "Mixed_5b": inception_a(192, 32, rng),                                 # 35x35x256
        "Mixed_5c": inception_a(256, 64, rng),                                 # 35x35x288
        "Mixed_5d": inception_a(288, 64, rng),
        "Mixed_6a": inception_b(288, rng),                                     # 17x17x768
        "Mixed_6b": inception_c(768, 128, rng),
        "Mixed_6c": inception_c(768, 160, rng),
        "Mixed_6d": inception_c(768, 160, rng),
        "Mixed_6e": inception_c(768, 192, rng),
    })
    if aux_logits:
        layers["AuxLogits"] = inception_aux(768, num_classes, rng)
    layers.update({
        "Mixed_7a": inception_d(768, rng),                                     # 8x8x1280
        "Mixed_7b": inception_e(1280, rng),                                    # 8x8x2048
        "Mixed_7c": inception_e(2048, rng),
        "avgpool": GlobalAvgPool2d(),
        "flatten": Flatten(),
        "dropout": Dropout(drop_prob, rng=rng),
        "fc": Linear(2048, num_classes, rng=rng),
    })
    return Sequential(layers)
