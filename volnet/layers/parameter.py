"""Handles on a network's parameters, for optimizers built the PyTorch way.

``net.parameters()`` returns a list of :class:`Parameter` handles. A handle
names one array of one layer and reads the array and its gradient *when asked*
(``backward`` writes fresh gradient arrays, ``astype`` fresh weights), so an
optimizer built once from the handles keeps updating the live network::

    opt = vn.SGD(net.parameters(), lr=0.1)   # or vn.SGD(net, lr=0.1)
    ...forward, loss, backward...
    opt.step()

A container (``Sequential``, ``Residual``...) owns no arrays itself: its
``params`` and ``grads`` are :class:`ContainerParams`, empty mappings that
say so when printed, indexed or handed to an optimizer.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError


class Parameter:
    """One trainable array of one layer, found by name when used.

    Attributes:
        name: the dotted name (``"features.0.weight"``), also the optimizer's state key.
        layer: the layer that owns the array.
        key: the array's key in ``layer.params`` (``"weight"``).
    """

    __slots__ = ("key", "layer", "name")

    def __init__(self, name: str, layer, key: str) -> None:
        self.name, self.layer, self.key = name, layer, key

    @property
    def data(self) -> np.ndarray:
        """The parameter array itself (updates write into it)."""
        return self.layer.params[self.key]

    @property
    def grad(self) -> np.ndarray | None:
        """The gradient from the last ``backward`` (None before any)."""
        return self.layer.grads.get(self.key)

    @property
    def frozen(self) -> bool:
        """True when ``net.freeze`` excludes this parameter from training."""
        return self.key in self.layer.frozen

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"


class ContainerParams(dict):
    """The ``params`` (or ``grads``) of a container: always empty, and says so.

    A container's arrays live in its layers; reading them here would silently
    give nothing, so indexing raises a KeyError that names the right call, and
    optimizers refuse this mapping with the same advice.
    """

    def __init__(self, owner: str = "container", what: str = "params") -> None:
        super().__init__()
        self.owner, self.what = owner, what

    def advice(self) -> str:
        """The message shown wherever this empty mapping would mislead."""
        return (f"{self.owner}.{self.what} is empty: a container keeps its parameters and "
                f"gradients in its layers. Build the optimizer from the network, "
                f"opt = vn.SGD(net, lr=0.01) (or vn.SGD(net.parameters(), lr=0.01)), and call "
                f"opt.step() after backward; net.named_params() lists (name, array, grad) "
                f"and net.state_dict() copies every array")

    def __missing__(self, key):
        raise KeyError(f"{key!r}: {self.advice()}")

    def __setitem__(self, key, value) -> None:
        raise ConfigError(f"cannot set {self.what}[{key!r}] on a container: {self.advice()}")

    def update(self, *args, **kwargs) -> None:
        """Refused, as ``__setitem__`` is."""
        raise ConfigError(f"cannot update {self.what} of a container: {self.advice()}")

    def __repr__(self) -> str:
        return f"{{}}  # {self.advice()}"


def collect(source) -> list[Parameter]:
    """Parameter handles from a Layer or from an iterable of handles; refuse anything else."""
    from volnet.layers.base import Layer

    if isinstance(source, Layer):
        return source.parameters()
    if isinstance(source, ContainerParams):
        raise ConfigError(source.advice())
    if isinstance(source, dict):
        raise ConfigError(
            "an optimizer is built from the network or its parameters, not from a params "
            "dict (it would not find the gradients): write vn.SGD(net, lr=...) or "
            "vn.SGD(net.parameters(), lr=...)")
    if isinstance(source, (int, float)):
        raise ConfigError(
            f"the optimizer's first argument is the network or net.parameters(), got the number "
            f"{source}; pass the learning rate by keyword: vn.SGD(net, lr={source})")
    try:
        handles = list(source)
    except TypeError:
        raise ConfigError(f"cannot build an optimizer from a {type(source).__name__}; pass the "
                          "network or net.parameters()") from None
    bad = [h for h in handles if not isinstance(h, Parameter)]
    if bad:
        raise ConfigError(f"optimizer parameters must come from net.parameters(), got "
                          f"{type(bad[0]).__name__}; write vn.SGD(net, lr=...) or "
                          "vn.SGD(net.parameters(), lr=...)")
    if not handles:
        raise ConfigError("the optimizer got an empty parameter list; pass the network, "
                          "vn.SGD(net, lr=...)")
    return handles
