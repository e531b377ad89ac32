"""Name -> builder table used by the CLI and the demo. Each builder takes keyword
arguments ``num_classes``, ``in_channels`` and ``seed`` at least; the generative
models in ``GENERATIVE`` (a generator, an auto-encoder) have no classes and take
``in_channels`` and ``seed``."""

from __future__ import annotations

from volnet.errors import ConfigError
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
from volnet.models.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from volnet.models.vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

MODELS = {
    "lenet5": lenet5,
    "cifar_example": cifar_example,
    "alexnet": alexnet,
    "alexnet_torchvision": alexnet_torchvision,
    "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19,
    "vgg11_bn": vgg11_bn, "vgg13_bn": vgg13_bn, "vgg16_bn": vgg16_bn, "vgg19_bn": vgg19_bn,
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50,
    "resnet101": resnet101, "resnet152": resnet152,
    "googlenet": googlenet,
    "inception_v3": inception_v3,
    "inception_v4": inception_v4,
    "context_module": context_module,
    "pattern": pattern,
    "all_cnn_c": all_cnn_c,
    "inception_resnet_v2": inception_resnet_v2,
    "dcgan_generator": dcgan_generator,
    "dcgan_discriminator": dcgan_discriminator,
    "conv_vae": conv_vae,
    "fcn": fcn,
    "dilated": dilated,
    "dilated_context": dilated_context,
}

# Models that do not classify: no num_classes argument.
GENERATIVE = {"dcgan_generator", "conv_vae"}

# Per-example input shape each model expects by default (C, H, W).
INPUT_SHAPES = {
    "lenet5": (1, 28, 28),
    "cifar_example": (3, 32, 32),
    "alexnet": (3, 227, 227),
    "alexnet_torchvision": (3, 224, 224),
    **{name: (3, 224, 224) for name in MODELS if name.startswith(("vgg", "resnet"))},
    "googlenet": (3, 224, 224),
    "inception_v3": (3, 299, 299),
    "inception_v4": (3, 299, 299),
    "context_module": (21, 66, 66),   # PASCAL VOC's 21 score maps, 66x66 (Yu & Koltun)
    "pattern": (3, 32, 32),
    "all_cnn_c": (3, 32, 32),                 # CIFAR-10
    "inception_resnet_v2": (3, 299, 299),
    "dcgan_generator": (100, 1, 1),    # the noise vector z as a 1x1x100 volume
    "dcgan_discriminator": (1, 28, 28),
    "conv_vae": (1, 28, 28),
    **{name: (1, 64, 64) for name in ("fcn", "dilated", "dilated_context")},   # digit scenes
}


def build(name: str, weights=None, **kwargs):
    """Build a registered model by name, with a clear error listing the names.

    ``weights``: None (fresh initialisation), "imagenet" (torchvision's file) or a path.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return with_weights(MODELS[name], name)(weights=weights, **kwargs)


def pretrained(name: str, weights="imagenet", **kwargs):
    """Build zoo model ``name`` and load weights: ``"imagenet"`` (download) or a file path.

    Auxiliary-head keys in torchvision's GoogLeNet/Inception files are dropped when
    the model is built without those heads. ``kwargs`` go to the builder.

    Args:
        name: a zoo model with torchvision keys (see ``volnet.io.weights.WEIGHTS``).
        weights: ``"imagenet"`` to fetch torchvision's file (cached), or a file path.
    """
    return build(name, weights=weights, **kwargs)
