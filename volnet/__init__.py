"""volnet: the CS231n ConvNet system as a NumPy library.

    >>> import volnet as vn
    >>> net = vn.Sequential(vn.Conv2d(3, 12, 3, padding=1), vn.ReLU(), vn.MaxPool2d(2),
    ...                     vn.Flatten(), vn.Linear(16 * 16 * 12, 10))
    >>> net.output_shape((3, 32, 32))
    (10,)
"""

from volnet import models
from volnet.errors import (
                           BudgetError,
                           CheckpointError,
                           ConfigError,
                           DataError,
                           DTypeError,
                           NonFiniteError,
                           ShapeError,
                           StateDictError,
                           StateError,
                           TrainingDivergedError,
                           VolnetError,
)
from volnet.functional.conv import conv_output_size
from volnet.functional.loss import softmax, softmax_cross_entropy, svm_hinge_loss
from volnet.io.checkpoint import load, save
from volnet.layers import (
                           AdaptiveAvgPool2d,
                           AvgPool2d,
                           BatchNorm1d,
                           BatchNorm2d,
                           ChannelAffine,
                           Concat,
                           Conv2d,
                           ConvTranspose2d,
                           Dropout,
                           FlatConcat,
                           Flatten,
                           GlobalAvgPool2d,
                           Identity,
                           Layer,
                           LeakyReLU,
                           Linear,
                           LocalResponseNorm,
                           MaxPool2d,
                           ReLU,
                           Residual,
                           Scale,
                           Sequential,
                           SideBranch,
                           Sigmoid,
                           Softmax,
                           Tanh,
                           Upsample,
)
from volnet.layers.anomaly import detect_anomaly
from volnet.tools.dense import dense_scores
from volnet.tools.fully_conv import to_fully_conv
from volnet.tools.receptive_field import receptive_field
from volnet.tools.summary import summary
from volnet.train import SGD, Adagrad, Adam, RMSProp, Trainer, fit

__version__ = "0.1.0"

__all__ = [
                           "SGD",
                           "Adagrad",
                           "Adam",
                           "AdaptiveAvgPool2d",
                           "AvgPool2d",
                           "BatchNorm1d",
                           "BatchNorm2d",
                           "BudgetError",
                           "ChannelAffine",
                           "CheckpointError",
                           "Concat",
                           "ConfigError",
                           "Conv2d",
                           "ConvTranspose2d",
                           "DTypeError",
                           "DataError",
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
                           "NonFiniteError",
                           "RMSProp",
                           "ReLU",
                           "Residual",
                           "Scale",
                           "Sequential",
                           "ShapeError",
                           "SideBranch",
                           "Sigmoid",
                           "Softmax",
                           "StateDictError",
                           "StateError",
                           "Tanh",
                           "Trainer",
                           "TrainingDivergedError",
                           "Upsample",
                           "VolnetError",
                           "conv_output_size",
                           "dense_scores",
                           "detect_anomaly",
                           "fit",
                           "load",
                           "models",
                           "receptive_field",
                           "save",
                           "softmax",
                           "softmax_cross_entropy",
                           "summary",
                           "svm_hinge_loss",
                           "to_fully_conv",
]
