"""A plain torch.nn Inception-ResNet-v2 with the module names of timm's ``inception_resnet_v2``.

timm cannot be installed here, so this follows the layout of
timm/models/inception_resnet_v2.py (Cadene's port of Google's TF-slim graph): ``conv2d_1a``
... ``mixed_5b``, ``repeat`` (Block35 x 10), ``mixed_6a``, ``repeat_1`` (Block17 x 20),
``mixed_7a``, ``repeat_2`` (Block8 x 9), ``block8`` (no RELU), ``conv2d_7b``, ``classif``.
The residual module is spelled out with torch ops only: cat, 1x1 conv, scale, add, RELU.
"""

import torch
from torch import nn
from zoo_torch_refs import _avg_conv, _bc, _Cat, _seq4


class _Block(nn.Module):
    """``relu(x + scale * conv2d(cat(branch0(x), branch1(x), ...)))``."""

    def __init__(self, width, depth, scale, relu=True, **branches):
        super().__init__()
        for name, module in branches.items():
            setattr(self, name, module)
        self.conv2d = nn.Conv2d(width, depth, kernel_size=1)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        branches = [m(x) for name, m in self.named_children() if name.startswith("branch")]
        out = self.conv2d(torch.cat(branches, 1)) * self.scale + x
        return torch.relu(out) if self.relu else out


def block35():
    return _Block(128, 320, 0.17, branch0=_bc(320, 32, 1),
                  branch1=_seq4((320, 32, 1), (32, 32, 3, 1, 1)),
                  branch2=_seq4((320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1)))


def block17():
    return _Block(384, 1088, 0.10, branch0=_bc(1088, 192, 1),
                  branch1=_seq4((1088, 128, 1), (128, 160, (1, 7), 1, (0, 3)),
                                (160, 192, (7, 1), 1, (3, 0))))


def block8(scale=0.20, relu=True):
    return _Block(448, 2080, scale, relu, branch0=_bc(2080, 192, 1),
                  branch1=_seq4((2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)),
                                (224, 256, (3, 1), 1, (1, 0))))


class InceptionResNetV2(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv2d_1a = _bc(3, 32, 3, 2)
        self.conv2d_2a = _bc(32, 32, 3)
        self.conv2d_2b = _bc(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = _bc(64, 80, 1)
        self.conv2d_4a = _bc(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, 2)
        self.mixed_5b = _Cat(branch0=_bc(192, 96, 1),
                             branch1=_seq4((192, 48, 1), (48, 64, 5, 1, 2)),
                             branch2=_seq4((192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
                             branch3=_avg_conv(192, 64))
        self.repeat = nn.Sequential(*[block35() for _ in range(10)])
        self.mixed_6a = _Cat(branch0=_bc(320, 384, 3, 2),
                             branch1=_seq4((320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)),
                             branch2=nn.MaxPool2d(3, 2))
        self.repeat_1 = nn.Sequential(*[block17() for _ in range(20)])
        self.mixed_7a = _Cat(branch0=_seq4((1088, 256, 1), (256, 384, 3, 2)),
                             branch1=_seq4((1088, 256, 1), (256, 288, 3, 2)),
                             branch2=_seq4((1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)),
                             branch3=nn.MaxPool2d(3, 2))
        self.repeat_2 = nn.Sequential(*[block8() for _ in range(9)])
        self.block8 = block8(scale=1.0, relu=False)
        self.conv2d_7b = _bc(2080, 1536, 1)
        self.classif = nn.Linear(1536, num_classes)

    def forward(self, x):
        for module in list(self.children())[:-1]:
            x = module(x)
        return self.classif(torch.flatten(x.mean((2, 3)), 1))    # global average, eval dropout
