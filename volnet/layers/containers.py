"""Composite layers: Sequential (a list), Residual (a sum), Concat (Inception branches).

Composites are layers: they nest, print as trees, index by position or name
and expose their children's parameters under dotted names. A child named ""
is spliced into its parent's namespace, which lets the zoo reproduce
torchvision's state-dict keys exactly.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers import hooks
from volnet.layers.activation import ReLU
from volnet.layers.base import Layer
from volnet.layers.conv import Conv2d
from volnet.layers.norm import BatchNorm2d
from volnet.layers.parameter import ContainerParams
from volnet.runtime import backend


def _as_children(items) -> OrderedDict[str, Layer]:
    if len(items) == 1 and isinstance(items[0], dict):
        children = OrderedDict((str(k), v) for k, v in items[0].items())
    else:
        children = OrderedDict((str(i), layer) for i, layer in enumerate(items))
    for name, layer in children.items():
        if not isinstance(layer, Layer):
            raise ConfigError(f"child {name!r} must be a volnet Layer, got {type(layer).__name__}")
    return children


class Container(Layer):
    """A layer made of named child layers."""

    plans_inference = True

    def __init__(self, children: OrderedDict[str, Layer]) -> None:
        super().__init__()
        # the arrays live in the children; an empty dict here would let
        # opt.step(net.params, net.grads) silently update nothing
        self.params = ContainerParams(type(self).__name__, "params")
        self.grads = ContainerParams(type(self).__name__, "grads")
        self._children = children
        self._set_path(self.path)

    def named_children(self):
        return list(self._children.items())

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self):
        return iter(self._children.values())

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._children[key]
        layers = list(self._children.values())
        if isinstance(key, slice):
            part = Sequential(*layers[key])
            self._set_path(self.path)   # shared children keep their names in this (whole) network
            return part
        return layers[key]

    def __setitem__(self, key, layer: Layer) -> None:
        """Replace a child by position or name (e.g. a new classifier head)."""
        if not isinstance(layer, Layer):
            raise ConfigError(f"can only set volnet Layers, got {type(layer).__name__}")
        name = key if isinstance(key, str) else list(self._children)[key]
        if name not in self._children:
            raise KeyError(f"{type(self).__name__} has no child {name!r}")
        self._children[name] = layer
        self._set_path(self.path)

    def __getattr__(self, name):
        children = self.__dict__.get("_children")
        if children is not None and name in children:
            return children[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or child {name!r}")


class Sequential(Container):
    """Layers applied in order; backward runs them in reverse.

    ``Sequential(a, b, c)`` names children "0", "1", "2" (PyTorch keys ``0.weight``);
    ``Sequential({"conv1": a, "relu": b})`` uses the given names.

    Example:
        >>> net = Sequential(Conv2d(3, 12, 3, padding=1), ReLU(), MaxPool2d(2))
        >>> net.output_shape((3, 32, 32))
        (12, 16, 16)
    """

    def __init__(self, *layers) -> None:
        super().__init__(_as_children(layers))

    def append(self, layer: Layer) -> Sequential:
        """Add a layer at the end, named by its position."""
        self._children[str(len(self._children))] = layer
        self._set_path(self.path)
        return self

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self._children.values():
            shape = layer.output_shape(shape)
        return shape

    def fused_steps(self, fold: bool) -> list[tuple[Layer, Layer | None, Layer | None]]:
        """The children in order as ``(layer, bn, relu)`` steps, fused when the compiled
        kernels run and no hook watches the layers involved (a hook sees every layer):

        * ``(conv, bn, relu-or-None)`` with ``fold`` (inference keeping no cache): a
          Conv2d, the BatchNorm2d after it and a ReLU after that, as one convolution
          (``conv.forward_folded``);
        * ``(layer, None, relu)``: a layer that ``fuses_relu`` (batch norm, convolution)
          and the ReLU right after it, one pass (``layer.forward_relu``);
        * ``(layer, None, None)`` otherwise. Under ``VOLNET_KERNELS=numpy`` nothing fuses.
        """
        layers = list(self._children.values())
        fuse = backend.fusing()
        steps, i = [], 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if fuse and i + 1 < len(layers) else None
            after = layers[i + 2] if nxt is not None and i + 2 < len(layers) else None
            if (fold and type(layer) is Conv2d and isinstance(nxt, BatchNorm2d)
                    and not _watched(layer, nxt)):
                relu = after if type(after) is ReLU and not _watched(after) else None
                steps.append((layer, nxt, relu))
                i += 3 if relu is not None else 2
            elif (getattr(layer, "fuses_relu", False) and type(nxt) is ReLU
                    and not _watched(layer, nxt)):
                steps.append((layer, None, nxt))
                i += 2
            else:
                steps.append((layer, None, None))
                i += 1
        return steps

    def _forward(self, x, training, keep_cache):
        steps = self.fused_steps(fold=not training and not keep_cache)
        for layer, bn, relu in steps:
            if bn is not None:
                x = layer.forward_folded(x, bn, relu is not None)
                bn.skip_folded(x)
            elif relu is not None:
                x = layer.forward_relu(x, training, cache=keep_cache)
            else:
                x = layer.forward(x, training, cache=keep_cache)
            if relu is not None:
                relu.skip_fused(x)
        # backward follows the same pairing, as (layer, relu) steps (nothing folds in training)
        self._cache = [(layer, relu) for layer, _, relu in steps] if keep_cache else None
        return x

    @staticmethod
    def _step_backward(layer, relu, dout, input_grad=True):
        if relu is None:
            return layer.backward(dout, input_grad)
        return layer.backward_relu(dout, input_grad)

    def _backward(self, dout):
        for layer, relu in reversed(self._cache):
            dout = self._step_backward(layer, relu, dout)
        return dout

    def _backward_params(self, dout):
        steps = self._cache
        for layer, relu in reversed(steps[1:]):
            dout = self._step_backward(layer, relu, dout)
        if steps:   # only the first child sees our input
            self._step_backward(*steps[0], dout, input_grad=False)


def _watched(*layers) -> bool:
    """Whether a hook would see any of these layers (then they run unfused)."""
    return any(hooks.active(layer) for layer in layers)


class Residual(Container):
    """``activation(body(x) + shortcut(x))``: a ResNet block (identity shortcut when None).

    Backward sends the output gradient down both paths and sums what returns,
    since x fed both. ``body_name``/``shortcut_name`` set the state-dict prefixes
    (torchvision: ``""`` and ``"downsample"``).

    Example:
        >>> block = Residual(Sequential(Conv2d(8, 8, 3, padding=1), ReLU()))
        >>> block.output_shape((8, 5, 5))
        (8, 5, 5)
    """

    def __init__(self, body: Layer, shortcut: Layer | None = None, activation: Layer | None = None,
                 body_name: str = "body", shortcut_name: str = "shortcut") -> None:
        children = OrderedDict([(body_name, body)])
        if shortcut is not None:
            children[shortcut_name] = shortcut
        if activation is not None:
            children["activation"] = activation
        self.body, self.shortcut, self.activation = body, shortcut, activation
        super().__init__(children)
        if body_name == shortcut_name:
            raise ConfigError("Residual: body_name and shortcut_name must differ")

    def __setitem__(self, key, layer):
        raise ConfigError("Residual children are fixed; build a new Residual instead")

    def output_shape(self, input_shape):
        body = self.body.output_shape(input_shape)
        short = self.shortcut.output_shape(input_shape) if self.shortcut else tuple(input_shape)
        if body != short:
            raise ShapeError(f"{self.where()}: body gives {body} but the shortcut gives {short} "
                             f"for input {tuple(input_shape)}; add a projection shortcut")
        return self.activation.output_shape(body) if self.activation else body

    def _forward(self, x, training, keep_cache):
        out = self.body.forward(x, training, cache=keep_cache)
        short = self.shortcut.forward(x, training, cache=keep_cache) if self.shortcut else x
        if out.shape != short.shape:
            raise ShapeError(f"{self.where()}: body output {out.shape} and shortcut output "
                             f"{short.shape} differ; add a projection shortcut")
        if type(self.activation) is ReLU and backend.fusing() and not _watched(self.activation):
            out = self.activation.add_forward(out, short, training, cache=keep_cache)
        else:
            out = out + short
            if self.activation:
                out = self.activation.forward(out, training, cache=keep_cache)
        self._cache = True if keep_cache else None
        return out

    def _backward(self, dout):
        if self.activation:
            dout = self.activation.backward(dout)
        dx = self.body.backward(dout)
        return dx + (self.shortcut.backward(dout) if self.shortcut else dout)

    def _backward_params(self, dout):
        if self.activation:
            dout = self.activation.backward(dout)
        self.body.backward(dout, input_grad=False)
        if self.shortcut:
            self.shortcut.backward(dout, input_grad=False)


class Concat(Container):
    """Inception-style block: every branch sees the same input; outputs join along channels.

    Example:
        >>> block = Concat(Conv2d(3, 2, 1), Conv2d(3, 5, 3, padding=1))
        >>> block.output_shape((3, 5, 5))
        (7, 5, 5)
    """

    def __init__(self, *branches) -> None:
        super().__init__(_as_children(branches))
        if not self._children:
            raise ConfigError("Concat needs at least one branch")

    def output_shape(self, input_shape):
        shapes = [(name, b.output_shape(input_shape)) for name, b in self._children.items()]
        spatial = {s[1:] for _, s in shapes}
        if len(spatial) != 1:
            raise ShapeError(f"{self.where()}: branches disagree on spatial size for input "
                             f"{tuple(input_shape)}: " + ", ".join(f"{n}: {s}" for n, s in shapes))
        return (sum(s[0] for _, s in shapes),) + shapes[0][1][1:]

    def _forward(self, x, training, keep_cache):
        outs = [b.forward(x, training, cache=keep_cache) for b in self._children.values()]
        if len({o.shape[2:] for o in outs}) != 1:
            raise ShapeError(f"{self.where()}: branch outputs disagree on spatial size: "
                             + ", ".join(str(o.shape) for o in outs))
        self._cache = np.cumsum([o.shape[1] for o in outs])[:-1] if keep_cache else None
        return np.concatenate(outs, axis=1)

    def _backward(self, dout):
        pieces = np.split(dout, self._cache, axis=1)
        grads = [b.backward(np.ascontiguousarray(d)) for b, d in zip(self._children.values(), pieces)]
        return sum(grads[1:], grads[0])   # x fed every branch: the gradients add

    def _backward_params(self, dout):
        for b, d in zip(self._children.values(), np.split(dout, self._cache, axis=1)):
            b.backward(np.ascontiguousarray(d), input_grad=False)
