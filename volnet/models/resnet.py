"""ResNet-18/34/50/101/152 (He et al. 2015), with torchvision's layout and keys.

Basic blocks (two 3x3 CONVs) for 18 and 34 layers, bottleneck blocks
(1x1 reduce, 3x3, 1x1 expand by 4) for 50, 101 and 152; batch norm after
every CONV; a 1x1 projection shortcut (``downsample``) where the shape
changes. As in torchvision (ResNet "v1.5") the bottleneck strides in its 3x3
CONV. Keys: ``conv1.weight``, ``layer1.0.conv1.weight``,
``layer2.0.downsample.0.weight``, ``fc.weight``.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import (
    BatchNorm2d,
    Conv2d,
    Flatten,
    GlobalAvgPool2d,
    Linear,
    MaxPool2d,
    ReLU,
    Residual,
    Sequential,
)

# depth -> (block kind, blocks per stage) (He et al. 2015, Table 1)
RESNET_CONFIGS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _downsample(in_ch: int, out_ch: int, stride: int, rng) -> Sequential | None:
    """The 1x1 projection shortcut, or None for an identity shortcut."""
    if stride == 1 and in_ch == out_ch:
        return None
    return Sequential(Conv2d(in_ch, out_ch, 1, stride=stride, bias=False, rng=rng),
                      BatchNorm2d(out_ch))


def basic_block(in_ch: int, width: int, stride: int = 1, rng=None) -> Residual:
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), both CONVs 3x3.

    Example:
        >>> basic_block(64, 128, stride=2).output_shape((64, 56, 56))
        (128, 28, 28)
    """
    body = Sequential({
        "conv1": Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=False, rng=rng),
        "bn1": BatchNorm2d(width),
        "relu": ReLU(),
        "conv2": Conv2d(width, width, 3, padding=1, bias=False, rng=rng),
        "bn2": BatchNorm2d(width),
    })
    return Residual(body, _downsample(in_ch, width, stride, rng), ReLU(),
                    body_name="", shortcut_name="downsample")


def bottleneck_block(in_ch: int, width: int, stride: int = 1, rng=None) -> Residual:
    """1x1 (width) -> 3x3 (width, stride) -> 1x1 (4 * width), plus the shortcut.

    Example:
        >>> bottleneck_block(64, 64).output_shape((64, 56, 56))
        (256, 56, 56)
    """
    out_ch = width * EXPANSION["bottleneck"]
    body = Sequential({
        "conv1": Conv2d(in_ch, width, 1, bias=False, rng=rng),
        "bn1": BatchNorm2d(width),
        "relu1": ReLU(),
        "conv2": Conv2d(width, width, 3, stride=stride, padding=1, bias=False, rng=rng),
        "bn2": BatchNorm2d(width),
        "relu2": ReLU(),
        "conv3": Conv2d(width, out_ch, 1, bias=False, rng=rng),
        "bn3": BatchNorm2d(out_ch),
    })
    return Residual(body, _downsample(in_ch, out_ch, stride, rng), ReLU(),
                    body_name="", shortcut_name="downsample")


def resnet(depth: int = 18, num_classes: int = 1000, in_channels: int = 3, seed=0,
           widths: tuple[int, ...] = (64, 128, 256, 512)) -> Sequential:
    """Build a ResNet of a given depth (18, 34, 50, 101 or 152).

    Args:
        depth: a key of ``RESNET_CONFIGS``.
        num_classes: outputs of the final FC layer.
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights.
        widths: base widths of the four stages (torchvision: 64, 128, 256, 512).

    Shape:
        (N, C, 224, 224) -> conv1 112x112x64 -> maxpool 56x56x64 -> layer1..4 (stride
        1, 2, 2, 2) -> 7x7 -> global average pool -> (N, num_classes).

    Example:
        >>> resnet(18, num_classes=10, widths=(4, 8, 8, 8)).output_shape((3, 32, 32))
        (10,)
    """
    if depth not in RESNET_CONFIGS:
        raise ConfigError(f"resnet: depth must be one of {sorted(RESNET_CONFIGS)}, got {depth}")
    if len(widths) != 4 or min(widths) < 1:
        raise ConfigError(f"resnet: widths must be four positive ints, got {widths}")
    kind, counts = RESNET_CONFIGS[depth]
    make = basic_block if kind == "basic" else bottleneck_block
    rng = np.random.default_rng(seed)
    stem = widths[0]
    children = {
        "conv1": Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False, rng=rng),
        "bn1": BatchNorm2d(stem),
        "relu": ReLU(),
        "maxpool": MaxPool2d(3, stride=2, padding=1),
    }
    channels = stem
    for i, (width, count) in enumerate(zip(widths, counts)):
        blocks = []
        for j in range(count):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(make(channels, width, stride, rng))
            channels = width * EXPANSION[kind]
        children[f"layer{i + 1}"] = Sequential(*blocks)
    children["avgpool"] = GlobalAvgPool2d()
    children["flatten"] = Flatten()
    children["fc"] = Linear(channels, num_classes, rng=rng)
    return Sequential(children)


def resnet18(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """ResNet-18: 11,689,512 parameters (torchvision)."""
    return resnet(18, num_classes, in_channels, seed, **kwargs)


def resnet34(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """ResNet-34: 21,797,672 parameters."""
    return resnet(34, num_classes, in_channels, seed, **kwargs)


def resnet50(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """ResNet-50: 25,557,032 parameters."""
    return resnet(50, num_classes, in_channels, seed, **kwargs)


def resnet101(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """ResNet-101: 44,549,160 parameters."""
    return resnet(101, num_classes, in_channels, seed, **kwargs)


def resnet152(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """ResNet-152: 60,192,808 parameters."""
    return resnet(152, num_classes, in_channels, seed, **kwargs)
