"""Training: update rules, learning-rate schedules, the Trainer loop, its steps and callbacks."""

from volnet.train.callbacks import EarlyStopping, LambdaCallback, ModelCheckpoint
from volnet.train.evaluation import evaluate
from volnet.train.fit import fit
from volnet.train.optim import SGD, Adagrad, Adam, Optimizer, RMSProp, make_optimizer
from volnet.train.optim_group import OptimizerGroup
from volnet.train.schedule import CosineLR, LinearDecay, ReduceLROnPlateau, StepLR
from volnet.train.steps import ClassifierStep, SegmentationStep
from volnet.train.trainer import History, Trainer

__all__ = [
           "SGD",
           "Adagrad",
           "Adam",
           "ClassifierStep",
           "CosineLR",
           "EarlyStopping",
           "History",
           "LambdaCallback",
           "LinearDecay",
           "ModelCheckpoint",
           "Optimizer",
           "OptimizerGroup",
           "RMSProp",
           "ReduceLROnPlateau",
           "SegmentationStep",
           "StepLR",
           "Trainer",
           "evaluate",
           "fit",
           "make_optimizer",
]
