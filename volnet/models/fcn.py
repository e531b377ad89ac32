"""A fully convolutional network (Long, Shelhamer & Darrell 2015), sized for the 64x64
digit scenes: the classifier made convolutional, its coarse scores upsampled and
fused with finer ones through a skip (their FCN-16s, one stride finer than FCN-32s).

Three blocks of two 3x3 convolutions, each ending in a 2x2 max pool (stride 2, 4,
8); the classifier's fully connected layers as convolutions (``fc6``: 3x3, ``fc7``:
1x1) and a 1x1 ``score`` layer give class scores at stride 8. These are upsampled
2x and added to scores computed by a 1x1 convolution from the stride-4 ``pool2``
features (the skip; zero-initialised, as in the paper, so training starts from the
coarse prediction), then upsampled 4x to the input's size. As in the paper, the
intermediate 2x upsampling is a transposed convolution initialised to bilinear
interpolation and learned (``upsample="transpose"``; ``"bilinear"`` fixes it), and
the final 4x upsampling is fixed bilinear interpolation.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import Conv2d, MaxPool2d, ReLU, Residual, Sequential
from volnet.layers.conv_transpose import ConvTranspose2d
from volnet.layers.upsample import Upsample

WIDTHS = (16, 32, 32, 64)


def bilinear_kernel(channels: int, factor: int) -> np.ndarray:
    """(C, C, 2f, 2f) weights making a stride-f transposed convolution (padding f/2)
    bilinear interpolation of each channel separately (FCN's ``upsample_filt``)."""
    size = 2 * factor
    centre = factor - 0.5
    og = np.arange(size)
    filt = 1 - np.abs(og - centre) / factor
    kernel = np.outer(filt, filt)
    weight = np.zeros((channels, channels, size, size))
    weight[np.arange(channels), np.arange(channels)] = kernel
    return weight


def _upsampler(channels: int, factor: int, how: str, rng):
    if how == "bilinear":
        return Upsample(scale_factor=factor, mode="bilinear")
    layer = ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                            bias=False, rng=rng)
    layer.params["weight"][...] = bilinear_kernel(channels, factor)
    return layer


def fcn(num_classes: int = 11, in_channels: int = 1, seed=0, upsample: str = "transpose",
        widths=WIDTHS) -> Sequential:
    """FCN-16s-style segmenter: stride-8 scores, 2x up, + stride-4 skip scores, 4x bilinear up.

    Args:
        num_classes: K (11 for the scenes).
        in_channels: image channels.
        seed: weight seed.
        upsample: the 2x step: "transpose" (learned, bilinear start) or "bilinear" (fixed).
        widths: channels of the three blocks and of fc6/fc7.

    Shape:
        (N, in_channels, H, W) -> (N, num_classes, H, W) for H, W divisible by 8.

    Example:
        >>> fcn().output_shape((1, 64, 64))
        (11, 64, 64)
    """
    if upsample not in ("transpose", "bilinear"):
        raise ConfigError(f"fcn: upsample must be 'transpose' or 'bilinear', got {upsample!r}")
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"fcn: need num_classes and in_channels >= 1, got {num_classes}, "
                          f"{in_channels}")
    rng = np.random.default_rng(seed)
    a, b, c, f = widths

    def block(cin, cout, name):
        return {f"conv{name}_1": Conv2d(cin, cout, 3, padding=1, rng=rng), f"relu{name}_1": ReLU(),
                f"conv{name}_2": Conv2d(cout, cout, 3, padding=1, rng=rng), f"relu{name}_2": ReLU(),
                f"pool{name}": MaxPool2d(2)}

    coarse = Sequential({**block(b, c, 3),
                         "fc6": Conv2d(c, f, 3, padding=1, rng=rng), "relu6": ReLU(),
                         "fc7": Conv2d(f, f, 1, rng=rng), "relu7": ReLU(),
                         "score": Conv2d(f, num_classes, 1, rng=rng),
                         "up2": _upsampler(num_classes, 2, upsample, rng)})
    skip = Conv2d(b, num_classes, 1, rng=rng)
    skip.params["weight"][...] = 0.0
    skip.params["bias"][...] = 0.0
    return Sequential({**block(in_channels, a, 1), **block(a, b, 2),
                       "fuse": Residual(coarse, skip, body_name="coarse", shortcut_name="score_pool2"),
                       "up4": Upsample(scale_factor=4, mode="bilinear")})
