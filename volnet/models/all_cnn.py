"""All-CNN-C (Springenberg, Dosovitskiy, Brox & Riedmiller 2015): no pooling at all.

"Striving for Simplicity: The All Convolutional Net", Table 1 (model C) and
Table 2 (All-CNN-C): every max pooling of the base model is replaced by a 3x3
convolution with stride 2, and the fully connected classifier by 1x1
convolutions and global averaging, so the net is convolutions and RELUs only
(the lecture's "getting rid of pooling"). On a 32x32 CIFAR-10 image:

    input 32x32x3, dropout 20%
    3x3 conv 96, RELU;  3x3 conv 96, RELU;  3x3 conv 96 stride 2, RELU -> 16x16x96, dropout 50%
    3x3 conv 192, RELU; 3x3 conv 192, RELU; 3x3 conv 192 stride 2, RELU -> 8x8x192, dropout 50%
    3x3 conv 192 (no padding), RELU -> 6x6x192; 1x1 conv 192, RELU; 1x1 conv 10, RELU
    global average over 6x6 -> 10 class scores (softmax in the loss)

Padding 1 keeps the size in every 3x3 convolution but the seventh, which the
paper leaves unpadded ("global averaging over 6x6 spatial dimensions"). The
RELU after the last 1x1 convolution is the paper's table too (scores >= 0).
Dropout follows the paper: 20% on the input, 50% after each layer that
replaced a pooling layer.

Parameters: 1,369,738 for 10 classes, weights and biases of the nine
convolutions (1,368,480 weights + 1,258 biases): the paper's 1.37 M for
All-CNN-C, rounded. Weights alone round to 1.37 M as well, so the counts agree
and nothing is left out or added.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from volnet.layers import Conv2d, Dropout, Flatten, GlobalAvgPool2d, ReLU, Sequential

# (name, out_channels, kernel, stride, padding, dropout after it)
_LAYERS = (
    ("conv1", 96, 3, 1, 1, None), ("conv2", 96, 3, 1, 1, None), ("conv3", 96, 3, 2, 1, "drop3"),
    ("conv4", 192, 3, 1, 1, None), ("conv5", 192, 3, 1, 1, None), ("conv6", 192, 3, 2, 1, "drop6"),
    ("conv7", 192, 3, 1, 0, None), ("conv8", 192, 1, 1, 0, None),
)


def all_cnn_c(num_classes: int = 10, in_channels: int = 3, seed=0,
              drop_prob: tuple[float, float] = (0.2, 0.5)) -> Sequential:
    """All-CNN-C: nine convolutions, two of them strided in place of pooling.

    Args:
        num_classes: channels of the last 1x1 convolution (class scores).
        in_channels: depth of the input volume.
        seed: seed (or Generator) for the He-normal initial weights and dropout masks.
        drop_prob: (on the input, after each strided convolution); the paper's (0.2, 0.5).

    Shape:
        (N, C, 32, 32) -> 16x16x96 -> 8x8x192 -> 6x6x192 -> 6x6xK -> (N, num_classes);
        inputs of 17x17 and up work (the unpadded conv7 needs a 3x3 map).

    Example:
        >>> all_cnn_c().output_shape((3, 32, 32))
        (10,)
    """
    rng = np.random.default_rng(seed)
    layers = OrderedDict([("drop0", Dropout(drop_prob[0], rng=rng))])
    channels = in_channels
    for name, out, kernel, stride, padding, drop in _LAYERS:
        layers[name] = Conv2d(channels, out, kernel, stride=stride, padding=padding, rng=rng)
        layers["relu" + name[4:]] = ReLU()
        if drop:
            layers[drop] = Dropout(drop_prob[1], rng=rng)
        channels = out
    layers["conv9"] = Conv2d(channels, num_classes, 1, rng=rng)     # class scores per position
    layers["relu9"] = ReLU()
    layers["pool"] = GlobalAvgPool2d()
    layers["flatten"] = Flatten()
    return Sequential(layers)
