"""volnet: the CS231n ConvNet system as a NumPy library.

    >>> import volnet as vn
    >>> net = vn.Sequential(vn.Conv2d(3, 12, 3, padding=1), vn.ReLU(), vn.MaxPool2d(2),
    ...                     vn.Flatten(), vn.Linear(16 * 16 * 12, 10))
    >>> net.output_shape((3, 32, 32))
    (10,)
"""

from volnet.errors import (CheckpointError, ConfigError, DataError, DTypeError, NonFiniteError,
                           ShapeError, StateDictError, StateError, TrainingDivergedError,
                           VolnetError)
from volnet.functional.conv import conv_output_size
from volnet.functional.loss import softmax, softmax_cross_entropy, svm_hinge_loss
from volnet.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat,
                           Conv2d, Dropout, Flatten, GlobalAvgPool2d, Identity, Layer, LeakyReLU,
                           Linear, LocalResponseNorm, MaxPool2d, ReLU, Residual, Sequential,
                           Sigmoid, Softmax, Tanh)
from volnet.layers import ChannelAffine, FlatConcat, SideBranch
from volnet.io.checkpoint import load, save
from volnet.train import SGD, Adagrad, Adam, RMSProp, Trainer, fit

from volnet import models
from volnet.tools.receptive_field import receptive_field
from volnet.tools.summary import summary
from volnet.tools.dense import dense_scores
from volnet.tools.fully_conv import to_fully_conv

__version__ = "0.1.0"

__all__ = [
    "Layer", "Sequential", "Residual", "Concat",
    "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "AdaptiveAvgPool2d",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softmax", "Identity", "Flatten", "Dropout",
    "BatchNorm1d", "BatchNorm2d", "LocalResponseNorm",
    "softmax", "softmax_cross_entropy", "svm_hinge_loss", "conv_output_size",
    "models", "summary", "receptive_field", "FlatConcat", "SideBranch", "ChannelAffine",
    "to_fully_conv", "dense_scores",
    "VolnetError", "ShapeError", "DTypeError", "ConfigError", "NonFiniteError", "StateError",
    "StateDictError", "CheckpointError", "DataError", "TrainingDivergedError",
    "load", "save", "fit", "Trainer", "SGD", "Adam", "RMSProp", "Adagrad",
]
