"""Generative nets without pooling for 28x28 digits: a DCGAN pair and a convolutional VAE.

DCGAN (Radford et al. 2016) guidelines, all followed: strided convolutions in the
discriminator and transposed ("fractionally strided") convolutions in the generator
instead of pooling; batch norm in both nets except the generator's output and the
discriminator's input layer; ReLU in the generator with Tanh at the output; LeakyReLU
(slope 0.2) in the discriminator; no fully connected hidden layers (the generator's
first layer projects z with a 7x7 transposed convolution from a 1x1 volume, the
discriminator ends in a 7x7 convolution to one logit). Sized for MNIST (28x28).

The VAE uses the same all-convolutional halves: an encoder to (mu, log sigma^2), a
``Reparameterize`` sampling layer, and a decoder to per-pixel Bernoulli logits.
"""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.layers import (
    BatchNorm2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    ReLU,
    Sequential,
    Tanh,
)
from volnet.layers.reparameterize import Reparameterize


def _dcgan_init(net, rng) -> None:
    """Radford et al.: weights ~ N(0, 0.02); batch-norm scales ~ N(1, 0.02), shifts 0."""
    for _, layer in net.named_layers():
        if isinstance(layer, (Conv2d, ConvTranspose2d)):
            layer.params["weight"][...] = init.normal(layer.params["weight"].shape, 0.02, rng)
        elif isinstance(layer, BatchNorm2d):
            layer.params["weight"][...] = 1.0 + init.normal(layer.params["weight"].shape, 0.02, rng)


def dcgan_generator(in_channels: int = 100, out_channels: int = 1, width: int = 32, seed=0) -> Sequential:
    """DCGAN generator: z (in_channels, 1, 1) -> image (out_channels, 28, 28) in [-1, 1].

    1x1xZ -> 7x7x2w -> 14x14xw -> 28x28x1 with transposed convolutions (F=7; F=4 S=2 P=1,
    each doubling H and W: (7 - 1)2 - 2 + 3 + 1 = 14). 347,073 parameters at the
    defaults (Z = 100, w = 32).

    Example:
        >>> dcgan_generator().output_shape((100, 1, 1))
        (1, 28, 28)
    """
    rng = np.random.default_rng(seed)
    net = Sequential(
        ConvTranspose2d(in_channels, 2 * width, 7, bias=False, rng=rng),          # 7x7x64
        BatchNorm2d(2 * width), ReLU(),
        ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False, rng=rng),  # 14x14x32
        BatchNorm2d(width), ReLU(),
        ConvTranspose2d(width, out_channels, 4, stride=2, padding=1, rng=rng),   # 28x28x1
        Tanh(),
    )
    _dcgan_init(net, rng)
    return net


def dcgan_discriminator(num_classes: int = 1, in_channels: int = 1, width: int = 32,
                        seed=0) -> Sequential:
    """DCGAN discriminator: image (in_channels, 28, 28) -> one real/fake logit per image.

    28x28x1 -> 14x14xw -> 7x7x2w -> 1x1x1 with strided convolutions (F=4 S=2 P=1:
    (28 - 4 + 2)/2 + 1 = 14), then a 7x7 convolution as the scoring layer.
    ``num_classes`` logits (1 for the GAN). 36,577 parameters at the defaults (w = 32).

    Example:
        >>> dcgan_discriminator().output_shape((1, 28, 28))
        (1,)
    """
    rng = np.random.default_rng(seed)
    net = Sequential(
        Conv2d(in_channels, width, 4, stride=2, padding=1, rng=rng),              # 14x14x32
        LeakyReLU(0.2),
        Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=False, rng=rng),    # 7x7x64
        BatchNorm2d(2 * width), LeakyReLU(0.2),
        Conv2d(2 * width, num_classes, 7, rng=rng),                               # 1x1x1
        Flatten(),
    )
    _dcgan_init(net, rng)
    return net


def conv_vae(in_channels: int = 1, latent: int = 16, width: int = 32, seed=0) -> Sequential:
    """Convolutional VAE for 28x28 digits: encoder, Reparameterize, decoder (no pooling, no FC).

    encoder 28x28x1 -> 14x14xw -> 7x7x2w -> 1x1x2L (mu, log sigma^2); ``sample`` draws
    z (1x1xL); decoder 1x1xL -> 7x7x2w -> 14x14xw -> 28x28x1 Bernoulli logits
    (``sigmoid`` gives the reconstruction). Training sets ``sample.kl_weight``. 217,313
    parameters at the defaults (L = 16, w = 32).

    Example:
        >>> conv_vae().output_shape((1, 28, 28))
        (1, 28, 28)
    """
    rng = np.random.default_rng(seed)
    encoder = Sequential(
        Conv2d(in_channels, width, 4, stride=2, padding=1, rng=rng), ReLU(),     # 14x14x32
        Conv2d(width, 2 * width, 4, stride=2, padding=1, rng=rng), ReLU(),       # 7x7x64
        Conv2d(2 * width, 2 * latent, 7, rng=rng),                               # 1x1x32
    )
    encoder[-1].params["weight"] *= 0.1            # start near the prior: small mu, log sigma^2
    decoder = Sequential(
        ConvTranspose2d(latent, 2 * width, 7, rng=rng), ReLU(),                  # 7x7x64
        ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, rng=rng), ReLU(),  # 14x14x32
        ConvTranspose2d(width, in_channels, 4, stride=2, padding=1, rng=rng),    # 28x28x1 logits
    )
    return Sequential({"encoder": encoder, "sample": Reparameterize(latent, rng=rng),
                       "decoder": decoder})
