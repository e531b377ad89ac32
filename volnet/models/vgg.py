"""VGG-11/13/16/19 (Simonyan & Zisserman 2014), with torchvision's layout and keys.

Every CONV is 3x3 stride 1 pad 1 (keeps W x H) and every POOL is 2x2 stride 2
(halves it); the configuration rows below are the columns A, B, D and E of the
paper's Table 1. State-dict keys follow torchvision: ``features.N.weight``,
``classifier.N.weight`` (N the position in each ``Sequential``).
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import (
    AdaptiveAvgPool2d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)

# conv widths; "M" is a 2x2 max pool (Simonyan & Zisserman, Table 1, columns A, B, D, E)
VGG_CONFIGS: dict[str, list] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def vgg_features(config: list, in_channels: int = 3, batch_norm: bool = False,
                 rng=None) -> Sequential:
    """The CONV/POOL stack of a VGG configuration row (torchvision's ``features``).

    Example:
        >>> vgg_features([8, "M", 16, "M"]).output_shape((3, 32, 32))
        (16, 8, 8)
    """
    layers, channels = [], in_channels
    for item in config:
        if item == "M":
            layers.append(MaxPool2d(2, stride=2))
            continue
        layers.append(Conv2d(channels, item, 3, padding=1, rng=rng))
        if batch_norm:
            layers.append(BatchNorm2d(item))
        layers.append(ReLU())
        channels = item
    return Sequential(*layers)


def vgg(config: str | list = "vgg16", batch_norm: bool = False, num_classes: int = 1000,
        in_channels: int = 3, seed=0, hidden_features: int = 4096,
        drop_prob: float = 0.5) -> Sequential:
    """Build a VGG network from a configuration name (``"vgg16"``) or row.

    Args:
        config: a key of ``VGG_CONFIGS`` or a list of widths and "M".
        batch_norm: insert BatchNorm2d after every CONV (torchvision's ``vgg16_bn``).
        num_classes: outputs of the last FC layer.
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        hidden_features: width of the two hidden FC layers (4096 in the paper).
        drop_prob: dropout probability before each hidden FC->FC step.

    Shape:
        (N, in_channels, 224, 224) -> (N, num_classes). ``AdaptiveAvgPool2d(7)``
        makes the FC input 7x7x512 for any input size (an identity at 224).

    Example:
        >>> net = vgg([8, "M"], num_classes=10, hidden_features=32)
        >>> net.output_shape((3, 32, 32))
        (10,)
    """
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ConfigError(f"vgg: unknown configuration {config!r}; choose one of "
                              f"{', '.join(VGG_CONFIGS)} or pass a list of widths and 'M'")
        config = VGG_CONFIGS[config]
    widths = [c for c in config if c != "M"]
    if not widths or any(not isinstance(c, int) or c < 1 for c in widths):
        raise ConfigError(f"vgg: configuration must hold positive ints and 'M', got {config!r}")
    rng = np.random.default_rng(seed)
    last = widths[-1]
    return Sequential({
        "features": vgg_features(config, in_channels, batch_norm, rng),
        "avgpool": AdaptiveAvgPool2d(7),                        # (N, 512, 7, 7)
        "flatten": Flatten(),                                   # (N, 25088)
        "classifier": Sequential(
            Linear(last * 7 * 7, hidden_features, rng=rng),
            ReLU(),
            Dropout(drop_prob, rng=rng),
            Linear(hidden_features, hidden_features, rng=rng),
            ReLU(),
            Dropout(drop_prob, rng=rng),
            Linear(hidden_features, num_classes, rng=rng),
        ),
    })


def vgg11(num_classes: int = 1000, in_channels: int = 3, seed=0, batch_norm: bool = False,
          **kwargs) -> Sequential:
    """VGG-11 (configuration A): 132,863,336 parameters (132,868,840 with batch norm)."""
    return vgg("vgg11", batch_norm, num_classes, in_channels, seed, **kwargs)


def vgg13(num_classes: int = 1000, in_channels: int = 3, seed=0, batch_norm: bool = False,
          **kwargs) -> Sequential:
    """VGG-13 (configuration B): 133,047,848 parameters."""
    return vgg("vgg13", batch_norm, num_classes, in_channels, seed, **kwargs)


def vgg16(num_classes: int = 1000, in_channels: int = 3, seed=0, batch_norm: bool = False,
          **kwargs) -> Sequential:
    """VGG-16 (configuration D): 138,357,544 parameters (138,365,992 with batch norm).

    ``features.28`` is conv5_3 (receptive field 196x196), ``features.30`` the last pool.
    """
    return vgg("vgg16", batch_norm, num_classes, in_channels, seed, **kwargs)


def vgg19(num_classes: int = 1000, in_channels: int = 3, seed=0, batch_norm: bool = False,
          **kwargs) -> Sequential:
    """VGG-19 (configuration E): 143,667,240 parameters."""
    return vgg("vgg19", batch_norm, num_classes, in_channels, seed, **kwargs)


def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """VGG-11 with batch norm (torchvision ``vgg11_bn``)."""
    return vgg11(num_classes, in_channels, seed, batch_norm=True, **kwargs)


def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """VGG-13 with batch norm (torchvision ``vgg13_bn``)."""
    return vgg13(num_classes, in_channels, seed, batch_norm=True, **kwargs)


def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """VGG-16 with batch norm (torchvision ``vgg16_bn``)."""
    return vgg16(num_classes, in_channels, seed, batch_norm=True, **kwargs)


def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, seed=0, **kwargs) -> Sequential:
    """VGG-19 with batch norm (torchvision ``vgg19_bn``)."""
    return vgg19(num_classes, in_channels, seed, batch_norm=True, **kwargs)
