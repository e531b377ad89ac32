"""The networks the demo offers, built for the MNIST sample's 1x28x28 digits."""

from __future__ import annotations

from dataclasses import dataclass

from volnet.errors import ConfigError
from volnet.layers import Layer
from volnet.models.registry import build
from volnet.web.netspec import EXAMPLE, parse_net

CHOICES = {
    "lenet5": "LeNet-5 (LeCun et al. 1998), ReLU + max pooling, 28x28 input padded in C1",
    "cifar_example": "the lecture's CIFAR-10 example CONV-RELU-POOL-FC, one channel, "
                     "digits zero-padded to 32x32",
    "custom": "a layer list such as: " + EXAMPLE,
}


@dataclass
class NetChoice:
    """A built network and the input it expects.

    Attributes:
        kind: One of ``CHOICES``.
        spec: The layer list for ``"custom"``, else "".
        net: The freshly initialised network.
        input_size: 28 or 32; digits are zero-padded (centred) up to it.
    """

    kind: str
    spec: str
    net: Layer
    input_size: int = 28

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (1, self.input_size, self.input_size)


def choose(kind: str, spec: str = "", seed: int = 0, max_bytes: int | str | None = None,
           batch_size: int = 32) -> NetChoice:
    """Build the network named by ``kind`` ("lenet5", "cifar_example" or "custom").

    A custom layer list must fit the memory budget ``max_bytes`` when trained at
    ``batch_size`` (see :func:`volnet.web.netspec.parse_net`).

    Example:
        >>> choose("cifar_example").net.output_shape((1, 32, 32))
        (10,)
    """
    if kind == "lenet5":
        return NetChoice(kind, "", build("lenet5", seed=seed))
    if kind == "cifar_example":
        return NetChoice(kind, "", build("cifar_example", in_channels=1, seed=seed), 32)
    if kind == "custom":
        return NetChoice(kind, spec, parse_net(spec, (1, 28, 28), seed=seed, max_bytes=max_bytes,
                                               batch_size=batch_size))
    raise ConfigError(f"unknown network {kind!r}; choose one of: {', '.join(CHOICES)}")
