"""The model zoo: tables plus one builder per family, and a registry for the CLI and demo."""

from volnet.io.weights import with_weights
from volnet.models.alexnet import alexnet, alexnet_torchvision
from volnet.models.all_cnn import all_cnn_c
from volnet.models.context import context_module
from volnet.models.dilated import dilated, dilated_context
from volnet.models.fcn import fcn
from volnet.models.generative import conv_vae, dcgan_discriminator, dcgan_generator
from volnet.models.googlenet import googlenet
from volnet.models.inception import inception_v3
from volnet.models.inception_resnet_v2 import inception_resnet_v2
from volnet.models.inception_v4 import inception_v4
from volnet.models.lenet import cifar_example, lenet5
from volnet.models.pattern import pattern
from volnet.models.registry import INPUT_SHAPES, MODELS, build, pretrained
from volnet.models.resnet import resnet, resnet18, resnet34, resnet50, resnet101, resnet152
from volnet.models.vgg import (
    vgg,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)

# One-call pretrained loading: vn.models.resnet18(weights="imagenet" or a .pth/.safetensors
# file). MODELS keeps the plain builders; build(name, weights=...) does the same.
for _name in MODELS:
    globals()[_name] = with_weights(globals()[_name], _name)
del _name

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "alexnet",
    "alexnet_torchvision",
    "all_cnn_c",
    "build",
    "cifar_example",
    "context_module",
    "conv_vae",
    "dcgan_discriminator",
    "dcgan_generator",
    "dilated",
    "dilated_context",
    "fcn",
    "googlenet",
    "inception_resnet_v2",
    "inception_v3",
    "inception_v4",
    "lenet5",
    "pattern",
    "pretrained",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]
