"""Training: update rules, learning-rate schedules, the Trainer loop and its callbacks."""

from volnet.train.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint
from volnet.train.fit import fit
from volnet.train.optim import SGD, Adagrad, Adam, Optimizer, RMSProp, make_optimizer
from volnet.train.schedule import CosineLR, ReduceLROnPlateau, StepLR
from volnet.train.trainer import History, Trainer, evaluate

__all__ = [
           "SGD",
           "Adagrad",
           "Adam",
           "CosineLR",
           "EarlyStopping",
           "History",
           "LambdaCallback",
           "ModelCheckpoint",
           "Optimizer",
           "RMSProp",
           "ReduceLROnPlateau",
           "StepLR",
           "Trainer",
           "evaluate",
           "fit",
           "make_optimizer",
]
