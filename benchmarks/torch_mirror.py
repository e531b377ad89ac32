"""Build the plain ``torch.nn`` equivalent of a volnet network, with the same weights.

The benchmarks compare like with like: each volnet layer becomes the
torch.nn module PyTorch users would write (Conv2d, BatchNorm2d, MaxPool2d...),
composites become small Sequential/sum/concat modules, and every parameter and
buffer is copied, so the two networks compute the same function (checked
before timing).
"""

from __future__ import annotations

import torch
from torch import nn

import volnet.layers as L


class _Residual(nn.Module):
    def __init__(self, body, shortcut, activation):
        super().__init__()
        self.body, self.shortcut, self.activation = body, shortcut, activation

    def forward(self, x):
        y = self.body(x) + (x if self.shortcut is None else self.shortcut(x))
        return y if self.activation is None else self.activation(y)


class _Concat(nn.Module):
    def __init__(self, branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([b(x) for b in self.branches], dim=1)


def _tensor(a):
    return torch.from_numpy(a.copy())


def _conv(layer):
    w = layer.params["weight"]
    m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.dilation, layer.groups, bias="bias" in layer.params)
    with torch.no_grad():
        m.weight.copy_(_tensor(w))
        if m.bias is not None:
            m.bias.copy_(_tensor(layer.params["bias"]))
    return m


def _linear(layer):
    m = nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params)
    with torch.no_grad():
        m.weight.copy_(_tensor(layer.params["weight"]))
        if m.bias is not None:
            m.bias.copy_(_tensor(layer.params["bias"]))
    return m


def _batchnorm(layer):
    cls = nn.BatchNorm2d if isinstance(layer, L.BatchNorm2d) else nn.BatchNorm1d
    m = cls(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    with torch.no_grad():
        m.weight.copy_(_tensor(layer.params["weight"]))
        m.bias.copy_(_tensor(layer.params["bias"]))
        m.running_mean.copy_(_tensor(layer.buffers["running_mean"]))
        m.running_var.copy_(_tensor(layer.buffers["running_var"]))
    return m


def _leaf(layer):
    simple = {
        L.ReLU: lambda l: nn.ReLU(),
        L.Tanh: lambda l: nn.Tanh(),
        L.Sigmoid: lambda l: nn.Sigmoid(),
        L.Identity: lambda l: nn.Identity(),
        L.Flatten: lambda l: nn.Flatten(),
        L.GlobalAvgPool2d: lambda l: nn.AdaptiveAvgPool2d(1),
        L.AdaptiveAvgPool2d: lambda l: nn.AdaptiveAvgPool2d(l.output_size),
        L.Dropout: lambda l: nn.Dropout(l.drop_prob),
        L.MaxPool2d: lambda l: nn.MaxPool2d(l.kernel_size, l.stride, l.padding,
                                            ceil_mode=l.ceil_mode),
        L.AvgPool2d: lambda l: nn.AvgPool2d(l.kernel_size, l.stride, l.padding, l.ceil_mode,
                                            l.count_include_pad),
        L.LocalResponseNorm: lambda l: nn.LocalResponseNorm(l.size, l.alpha, l.beta, l.k),
        L.Conv2d: _conv,
        L.Linear: _linear,
        L.BatchNorm2d: _batchnorm,
        L.BatchNorm1d: _batchnorm,
    }
    for cls, build in simple.items():
        if type(layer) is cls:
            return build(layer)
    raise TypeError(f"no torch.nn mirror for {type(layer).__name__}")


def to_torch(layer) -> nn.Module:
    """The torch.nn module computing what the volnet ``layer`` computes, same weights."""
    if isinstance(layer, L.Residual):
        return _Residual(to_torch(layer.body),
                         None if layer.shortcut is None else to_torch(layer.shortcut),
                         None if layer.activation is None else to_torch(layer.activation))
    if isinstance(layer, L.Concat):
        return _Concat([to_torch(child) for _, child in layer.named_children()])
    if isinstance(layer, L.Sequential):
        return nn.Sequential(*[to_torch(child) for _, child in layer.named_children()])
    return _leaf(layer)
