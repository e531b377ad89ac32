"""Building blocks shared by the Inception family."""

from __future__ import annotations

from volnet.errors import ConfigError
from volnet.layers import AvgPool2d, BatchNorm2d, Conv2d, ReLU, Sequential
from volnet.layers.channel_affine import ChannelAffine


def basic_conv(in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
               rng=None, eps: float = 0.001) -> Sequential:
    """CONV (no bias) -> batch norm -> RELU, torchvision's ``BasicConv2d``.

    Keys ``conv.weight``, ``bn.weight``, ``bn.running_mean``...; batch norm eps is
    0.001 as in torchvision's GoogLeNet and Inception v3 (and TensorFlow's Inception).

    Example:
        >>> basic_conv(192, 64, 1).output_shape((192, 28, 28))
        (64, 28, 28)
    """
    return Sequential({
        "conv": Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                       bias=False, rng=rng),
        "bn": BatchNorm2d(out_channels, eps=eps),
        "relu": ReLU(),
    })


def unit_range_input(in_channels: int) -> ChannelAffine:
    """torchvision's ``transform_input``: ImageNet-normalised RGB -> the [-1, 1] range
    Google's weights were trained on (set it when loading torchvision's pretrained weights)."""
    if in_channels != 3:
        raise ConfigError(f"transform_input maps ImageNet-normalised RGB and needs "
                          f"in_channels=3, got {in_channels}")
    return ChannelAffine.imagenet_to_unit_range()


def conv_chain(rng, *specs) -> Sequential:
    """Basic convs in a row, numbered 0, 1, ...: each spec is (in, out, kernel, stride, padding)
    (Inception v4 and Inception-ResNet-v2 branches)."""
    return Sequential(*[basic_conv(i, o, k, stride=s, padding=p, rng=rng)
                        for i, o, k, s, p in specs])


def avg_pool_branch(in_ch: int, out_ch: int, rng) -> Sequential:
    """3x3 average pool (stride 1, pad 1, padding not counted in the mean, as the reference's
    count_include_pad=False), then a 1x1 basic conv: the Inception pooling branch."""
    return Sequential(AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                      basic_conv(in_ch, out_ch, 1, rng=rng))
