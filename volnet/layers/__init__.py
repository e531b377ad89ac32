"""Layers: thin stateful wrappers over the functional kernels, one family per file."""

from volnet.layers.activation import Identity, LeakyReLU, ReLU, Scale, Sigmoid, Softmax, Tanh
from volnet.layers.base import Layer
from volnet.layers.batched_linear import BatchedLinear
from volnet.layers.binary_op import BinaryOp
from volnet.layers.channel_affine import ChannelAffine
from volnet.layers.channel_shuffle import ChannelShuffle
from volnet.layers.containers import Concat, Container, Residual, Sequential
from volnet.layers.conv import Conv2d
from volnet.layers.conv_transpose import ConvTranspose2d
from volnet.layers.dropout import Dropout
from volnet.layers.elementwise import ConstantOp
from volnet.layers.expand import Expand
from volnet.layers.flat_concat import FlatConcat
from volnet.layers.gelu import GELU, Erf
from volnet.layers.graph import Graph, Node
from volnet.layers.layer_norm import LayerNorm
from volnet.layers.linear import Linear
from volnet.layers.log_softmax import LogSoftmax
from volnet.layers.matmul import MatMul
from volnet.layers.multi_input import MultiInputLayer
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
from volnet.layers.power import Power
from volnet.layers.rectifiers import ELU, Clip, PReLU, ReLU6
from volnet.layers.reduce import Reduce
from volnet.layers.reshape import Flatten, Reshape
from volnet.layers.side_branch import SideBranch
from volnet.layers.swish import HardSigmoid, HardSwish, SiLU
from volnet.layers.transpose import Transpose
from volnet.layers.upsample import Upsample

__all__ = [
    "ELU",
    "GELU",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchedLinear",
    "BinaryOp",
    "ChannelAffine",
    "ChannelShuffle",
    "Clip",
    "Concat",
    "ConstantOp",
    "ConstantPad2d",
    "Container",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Erf",
    "Expand",
    "FlatConcat",
    "Flatten",
    "GlobalAvgPool2d",
    "GlobalMaxPool2d",
    "Graph",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LocalResponseNorm",
    "LogSoftmax",
    "MatMul",
    "MaxPool2d",
    "MultiInputLayer",
    "Narrow",
    "Node",
    "PReLU",
    "Power",
    "ReLU",
    "ReLU6",
    "Reduce",
    "Reshape",
    "Residual",
    "Scale",
    "Sequential",
    "SiLU",
    "SideBranch",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Transpose",
    "Upsample",
]
