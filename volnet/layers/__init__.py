"""Layers: thin stateful wrappers over the functional kernels, one family per file."""

from volnet.layers.activation import Identity, LeakyReLU, ReLU, Scale, Sigmoid, Softmax, Tanh
from volnet.layers.base import Layer
from volnet.layers.channel_affine import ChannelAffine
from volnet.layers.channel_shuffle import ChannelShuffle
from volnet.layers.containers import Concat, Container, Residual, Sequential
from volnet.layers.conv import Conv2d
from volnet.layers.dropout import Dropout
from volnet.layers.elementwise import ConstantOp
from volnet.layers.flat_concat import FlatConcat
from volnet.layers.linear import Linear
from volnet.layers.log_softmax import LogSoftmax
from volnet.layers.narrow import Narrow
from volnet.layers.norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from volnet.layers.padding import ConstantPad2d
from volnet.layers.pool import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    GlobalAvgPool2d,
    GlobalMaxPool2d,
    MaxPool2d,
)
from volnet.layers.rectifiers import ELU, Clip, PReLU, ReLU6
from volnet.layers.reshape import Flatten
from volnet.layers.side_branch import SideBranch
from volnet.layers.transpose import Transpose

__all__ = [
    "ELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelAffine",
    "ChannelShuffle",
    "Clip",
    "Concat",
    "ConstantOp",
    "ConstantPad2d",
    "Container",
    "Conv2d",
    "Dropout",
    "FlatConcat",
    "Flatten",
    "GlobalAvgPool2d",
    "GlobalMaxPool2d",
    "Identity",
    "Layer",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSoftmax",
    "MaxPool2d",
    "Narrow",
    "PReLU",
    "ReLU",
    "ReLU6",
    "Residual",
    "Scale",
    "Sequential",
    "SideBranch",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Transpose",
]
