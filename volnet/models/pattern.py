"""The lecture's layer pattern as a builder:

    INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC

CONVs are 3x3 with padding 1 (they keep W x H, as the lecture recommends), POOLs
2x2 stride 2 (they halve it). The lecture's examples: ``pattern(0, 0, 0)`` is a
linear classifier, ``pattern(1, 1, 0, pool=False)`` is INPUT -> CONV -> RELU -> FC,
``pattern(1, 2, 1)`` is INPUT -> [CONV -> RELU -> POOL]*2 -> FC -> RELU -> FC and
``pattern(2, 3, 2)`` is INPUT -> [CONV -> RELU -> CONV -> RELU -> POOL]*3 ->
[FC -> RELU]*2 -> FC. Keys follow torchvision's VGG: ``features.N``, ``classifier.N``.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential


def _per_item(value, count: int, name: str) -> list:
    """An int (or bool) for every item, or a sequence of exactly ``count`` of them."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(f"pattern: {name} must have {count} entries (one per block), "
                              f"got {len(value)}: {value!r}")
        return list(value)
    return [value] * count


def pattern(n: int = 2, m: int = 2, k: int = 1, widths=(32, 64), fc_widths=128,
            input_shape=(3, 32, 32), num_classes: int = 10, in_channels: int | None = None,
            seed=0, pool=True, kernel_size: int = 3) -> Sequential:
    """Build INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC.

    Args:
        n: CONV -> RELU pairs per block (N >= 0).
        m: blocks (M >= 0).
        k: hidden FC -> RELU layers (K >= 0).
        widths: filters K of the CONVs in each block: one int or M ints.
        fc_widths: widths of the hidden FC layers: one int or K ints.
        input_shape: per-example input (C, H, W); needed to size the first FC layer.
        num_classes: outputs of the final FC layer.
        in_channels: overrides C of ``input_shape`` when given.
        seed: seed (or Generator) for the He-normal initial weights.
        pool: whether each block ends with a 2x2 max pool: one bool or M bools.
        kernel_size: CONV filter size F (odd; padding (F - 1) / 2 keeps the size).

    Example:
        >>> net = pattern(n=1, m=2, k=1, widths=(8, 16), fc_widths=32)
        >>> [type(layer).__name__ for layer in net.features]
        ['Conv2d', 'ReLU', 'MaxPool2d', 'Conv2d', 'ReLU', 'MaxPool2d']
        >>> net.output_shape((3, 32, 32))
        (10,)
    """
    for name, value in (("n", n), ("m", m), ("k", k)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ConfigError(f"pattern: {name} must be an int >= 0, got {value!r}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"pattern: kernel_size must be odd so padding keeps the size, "
                          f"got {kernel_size}")
    widths, pools = _per_item(widths, m, "widths"), _per_item(pool, m, "pool")
    fc_widths = _per_item(fc_widths, k, "fc_widths")
    channels, height, width = input_shape
    channels = in_channels or channels
    rng = np.random.default_rng(seed)
    features = []
    for block, (filters, pooled) in enumerate(zip(widths, pools)):
        for _ in range(n):
            features += [Conv2d(channels, filters, kernel_size, padding=kernel_size // 2, rng=rng),
                         ReLU()]
            channels = filters
        if pooled:
            if min(height, width) < 2:
                raise ConfigError(f"pattern: block {block + 1} of {m} would pool a "
                                  f"{height}x{width} volume; use fewer pooled blocks or a "
                                  "larger input")
            features.append(MaxPool2d(2, stride=2))
            height, width = height // 2, width // 2
    classifier, size = [], channels * height * width
    for hidden in fc_widths:
        classifier += [Linear(size, hidden, rng=rng), ReLU()]
        size = hidden
    classifier.append(Linear(size, num_classes, rng=rng))
    return Sequential({"features": Sequential(*features), "flatten": Flatten(),
                       "classifier": Sequential(*classifier)})
