"""AlexNet (Krizhevsky, Sutskever & Hinton 2012): the lecture's network and torchvision's.

``variant="lecture"`` (default) is the 2012 network as CS231n describes it, in
the single-GPU form of Caffe's ``bvlc_alexnet``: 227x227x3 input, CONV1 96
filters 11x11 stride 4 -> 55x55x96, local response normalisation, overlapping
3x3 stride-2 max pooling, the two-column layers as ``groups=2`` convolutions
(conv2, conv4, conv5 see only their own column's half of the depth), dropout,
FC 4096-4096-1000: 60,965,224 parameters.

``variant="torchvision"`` is torchvision's single-column re-implementation
(64-192-384-256-256 filters, no LRN, ``AdaptiveAvgPool2d(6)``): 61,100,840
parameters, keys ``features.N.weight`` / ``classifier.N.weight``.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import (
    AdaptiveAvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    LocalResponseNorm,
    MaxPool2d,
    ReLU,
    Sequential,
)


def _lrn() -> LocalResponseNorm:
    # the paper's k=2, n=5, alpha=1e-4, beta=0.75 (Section 3.3); like Caffe, PyTorch (and
    # volnet) divide alpha by n inside the sum
    return LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


def _lecture_features(in_channels: int, rng) -> Sequential:
    return Sequential({
        "conv1": Conv2d(in_channels, 96, 11, stride=4, rng=rng),        # 55x55x96
        "relu1": ReLU(),
        "norm1": _lrn(),
        "pool1": MaxPool2d(3, stride=2),                                 # 27x27x96
        "conv2": Conv2d(96, 256, 5, padding=2, groups=2, rng=rng),       # 27x27x256
        "relu2": ReLU(),
        "norm2": _lrn(),
        "pool2": MaxPool2d(3, stride=2),                                 # 13x13x256
        "conv3": Conv2d(256, 384, 3, padding=1, rng=rng),                # 13x13x384
        "relu3": ReLU(),
        "conv4": Conv2d(384, 384, 3, padding=1, groups=2, rng=rng),      # 13x13x384
        "relu4": ReLU(),
        "conv5": Conv2d(384, 256, 3, padding=1, groups=2, rng=rng),      # 13x13x256
        "relu5": ReLU(),
        "pool5": MaxPool2d(3, stride=2),                                 # 6x6x256
    })


def _lecture_classifier(num_classes: int, drop_prob: float, rng) -> Sequential:
    return Sequential({
        "fc6": Linear(6 * 6 * 256, 4096, rng=rng),
        "relu6": ReLU(),
        "drop6": Dropout(drop_prob, rng=rng),
        "fc7": Linear(4096, 4096, rng=rng),
        "relu7": ReLU(),
        "drop7": Dropout(drop_prob, rng=rng),
        "fc8": Linear(4096, num_classes, rng=rng),
    })


def _torchvision(num_classes: int, in_channels: int, drop_prob: float, rng) -> Sequential:
    features = Sequential(
        Conv2d(in_channels, 64, 11, stride=4, padding=2, rng=rng), ReLU(),   # 55x55x64
        MaxPool2d(3, stride=2),                                              # 27x27x64
        Conv2d(64, 192, 5, padding=2, rng=rng), ReLU(),
        MaxPool2d(3, stride=2),                                              # 13x13x192
        Conv2d(192, 384, 3, padding=1, rng=rng), ReLU(),
        Conv2d(384, 256, 3, padding=1, rng=rng), ReLU(),
        Conv2d(256, 256, 3, padding=1, rng=rng), ReLU(),
        MaxPool2d(3, stride=2),                                              # 6x6x256
    )
    classifier = Sequential(
        Dropout(drop_prob, rng=rng), Linear(256 * 6 * 6, 4096, rng=rng), ReLU(),
        Dropout(drop_prob, rng=rng), Linear(4096, 4096, rng=rng), ReLU(),
        Linear(4096, num_classes, rng=rng),
    )
    return Sequential({"features": features, "avgpool": AdaptiveAvgPool2d(6),
                       "flatten": Flatten(), "classifier": classifier})


def alexnet(num_classes: int = 1000, in_channels: int = 3, seed=0, variant: str = "lecture",
            drop_prob: float = 0.5) -> Sequential:
    """AlexNet as the lecture describes it, or torchvision's variant.

    Args:
        num_classes: outputs of the last FC layer.
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        variant: ``"lecture"`` (227x227 input, LRN, groups) or ``"torchvision"`` (224x224).
        drop_prob: dropout probability before each FC->FC step.

    Shape:
        lecture: (N, C, 227, 227) -> conv1 (N, 96, 55, 55) -> ... -> (N, num_classes).

    Example:
        >>> net = alexnet()
        >>> net.features.conv1.output_shape((3, 227, 227))
        (96, 55, 55)
        >>> net.features.conv1.params["weight"].size
        34848
    """
    rng = np.random.default_rng(seed)
    if variant == "torchvision":
        return _torchvision(num_classes, in_channels, drop_prob, rng)
    if variant != "lecture":
        raise ConfigError(f"alexnet: variant must be 'lecture' or 'torchvision', got {variant!r}")
    return Sequential({
        "features": _lecture_features(in_channels, rng),
        "flatten": Flatten(),                                            # 9216
        "classifier": _lecture_classifier(num_classes, drop_prob, rng),
    })


def alexnet_torchvision(num_classes: int = 1000, in_channels: int = 3, seed=0,
                        drop_prob: float = 0.5) -> Sequential:
    """torchvision's AlexNet (61,100,840 parameters), loadable from its state dict."""
    return alexnet(num_classes, in_channels, seed, variant="torchvision", drop_prob=drop_prob)
