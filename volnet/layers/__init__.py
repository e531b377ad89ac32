"""Layers: thin stateful wrappers over the functional kernels, one family per file."""

from volnet.layers.activation import Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from volnet.layers.base import Layer
from volnet.layers.channel_affine import ChannelAffine
from volnet.layers.containers import Concat, Container, Residual, Sequential
from volnet.layers.conv import Conv2d
from volnet.layers.conv_transpose import ConvTranspose2d
from volnet.layers.dropout import Dropout
from volnet.layers.flat_concat import FlatConcat
from volnet.layers.linear import Linear
from volnet.layers.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from volnet.layers.pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d
from volnet.layers.reshape import Flatten
from volnet.layers.side_branch import SideBranch
from volnet.layers.upsample import Upsample

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelAffine",
    "Concat",
    "Container",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "FlatConcat",
    "Flatten",
    "GlobalAvgPool2d",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "MaxPool2d",
    "ReLU",
    "Residual",
    "Sequential",
    "SideBranch",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Upsample",
]
