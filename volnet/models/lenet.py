"""LeNet-5 (LeCun et al. 1998) and the lecture's CIFAR-10 example net."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError
from volnet.layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh


def classifier(in_features: int, num_classes: int, rng) -> Linear:
    """The scoring layer: weights ~ N(0, 0.01), biases 0, so every class starts with a
    score near 0 and the first loss is ln(num_classes), CS231n's sanity check (He-normal
    here would start LeNet-5 at a loss of 3 to 10)."""
    layer = Linear(in_features, num_classes, rng=rng)
    layer.params["weight"] = init.normal(layer.params["weight"].shape, 0.01, rng)
    return layer


def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
           activation: str = "relu", seed=0) -> Sequential:
    """LeNet-5: C1 6@5x5 -> S2 -> C3 16@5x5 -> S4 -> F5 120 -> F6 84 -> output.

    The 1998 layout takes 32x32 images; for 28x28 (MNIST) C1 pads by 2 so every
    later volume keeps the paper's size (28x28x6, 14x14x6, 10x10x16, 5x5x16).
    ``activation="relu"`` (default) uses ReLU and max pooling, the modern reading;
    ``"tanh"`` uses tanh and average pooling, closer to the paper. 61,706
    parameters for 10 classes and one input channel.

    Example:
        >>> lenet5().output_shape((1, 28, 28))
        (10,)
    """
    if input_size not in (28, 32):
        raise ConfigError(f"lenet5: input_size must be 28 (padded) or 32, got {input_size}")
    if activation not in ("relu", "tanh"):
        raise ConfigError(f"lenet5: activation must be 'relu' or 'tanh', got {activation!r}")
    rng = np.random.default_rng(seed)
    act, pool = (ReLU, MaxPool2d) if activation == "relu" else (Tanh, AvgPool2d)
    return Sequential(
        Conv2d(in_channels, 6, 5, padding=2 if input_size == 28 else 0, rng=rng),  # (N, 6, 28, 28)
        act(),
        pool(2),                                                                    # (N, 6, 14, 14)
        Conv2d(6, 16, 5, rng=rng),                                                  # (N, 16, 10, 10)
        act(),
        pool(2),                                                                    # (N, 16, 5, 5)
        Flatten(),
        Linear(16 * 5 * 5, 120, rng=rng),
        act(),
        Linear(120, 84, rng=rng),
        act(),
        classifier(84, num_classes, rng),
    )


def cifar_example(num_classes: int = 10, in_channels: int = 3, seed=0) -> Sequential:
    """The lecture's [INPUT-CONV-RELU-POOL-FC] net for 32x32x3 CIFAR-10 images.

    CONV 12 filters 3x3 pad 1 -> [32x32x12], RELU, POOL 2x2 -> [16x16x12], FC -> [1x1x10].

    Example:
        >>> cifar_example().output_shape((3, 32, 32))
        (10,)
    """
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(in_channels, 12, 3, padding=1, rng=rng),   # (N, 12, 32, 32)
        ReLU(),
        MaxPool2d(2, stride=2),                           # (N, 12, 16, 16)
        Flatten(),
        classifier(16 * 16 * 12, num_classes, rng),
    )
