"""Today's fine-tuned CNN families as plain ``torch.nn`` (no torchvision or timm), narrowed so
that the corpus runs in seconds: EfficientNet-B0, MobileNet v3 small, RegNet-Y-400MF,
ConvNeXt-tiny, and GhostNet- and ResNeSt-style networks. Each keeps its family's
operators and wiring (SiLU/Swish and squeeze-excitation gates, HardSwish/HardSigmoid,
channels-last LayerNorm with GELU and layer scale, ghost modules, split attention);
widths and depths are cut, as the names' comments say."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def _divisible(c: float, d: int = 8) -> int:
    return max(d, int(c + d / 2) // d * d)


class SqueezeExcite(nn.Module):
    """Pool, reduce, activate, expand, gate, multiply: (N, C, 1, 1) x (N, C, H, W)."""

    def __init__(self, c, squeezed, act=nn.ReLU, gate=nn.Sigmoid):
        super().__init__()
        self.fc1, self.act = nn.Conv2d(c, squeezed, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeezed, c, 1), gate()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


def _conv_bn(cin, cout, k=1, s=1, groups=1, act=None):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)


# ---- EfficientNet-B0: MBConv with SiLU and squeeze-excitation ------------------------------------
class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, s, act=nn.SiLU, se_act=nn.SiLU, gate=nn.Sigmoid,
                 se_ratio=0.25, se_base=None):
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid, act=act) if expand != 1 else nn.Identity()
        self.dw = _conv_bn(mid, mid, k, s, groups=mid, act=act)
        self.se = SqueezeExcite(mid, max(1, int((se_base or cin) * se_ratio)), se_act, gate) \
            if se_ratio else nn.Identity()
        self.project = _conv_bn(mid, cout)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class EfficientNetB0(nn.Module):
    """B0's stage table (expand, kernel, stride, channels, repeats) at 1/4 width, one block per
    stage; stem, head (1280 -> 320) and classifier as B0."""

    STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))

    def __init__(self, width=0.25, num_classes=10):
        super().__init__()
        c = _divisible(32 * width)
        self.stem = _conv_bn(3, c, 3, 2, act=nn.SiLU)
        blocks = []
        for expand, k, s, out, _ in self.STAGES:
            out = _divisible(out * width)
            blocks.append(MBConv(c, out, expand, k, s, se_base=c))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(c, _divisible(1280 * width), act=nn.SiLU)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(_divisible(1280 * width),
                                                                    num_classes))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(x.mean((2, 3)), 1))


# ---- MobileNet v3 small: HardSwish, HardSigmoid gates ------------------------------------------
class MobileNetV3Small(nn.Module):
    """v3-small's bneck table (kernel, expanded, out, SE, activation, stride) at 1/2 width."""

    BNECK = ((3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
             (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 120, 48, True, "HS", 1),
             (5, 288, 96, True, "HS", 2), (5, 576, 96, True, "HS", 1))

    def __init__(self, width=0.5, num_classes=10):
        super().__init__()
        c = _divisible(16 * width)
        self.stem = _conv_bn(3, c, 3, 2, act=nn.Hardswish)
        blocks = []
        for k, exp, out, se, nl, s in self.BNECK:
            exp, out = _divisible(exp * width), _divisible(out * width)
            act = nn.ReLU if nl == "RE" else nn.Hardswish
            block = MBConv(c, out, 1, k, s, act=act, se_act=nn.ReLU, gate=nn.Hardsigmoid,
                           se_ratio=0.25 if se else 0)
            block.expand = _conv_bn(c, exp, act=act) if exp != c else nn.Identity()
            block.dw = _conv_bn(exp, exp, k, s, groups=exp, act=act)
            block.se = SqueezeExcite(exp, _divisible(exp / 4), nn.ReLU, nn.Hardsigmoid) if se \
                else nn.Identity()
            block.project = _conv_bn(exp, out)
            blocks.append(block)
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.last = _conv_bn(c, _divisible(576 * width), act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(_divisible(576 * width), 64), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x):
        x = self.last(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---- RegNet-Y-400MF: grouped bottlenecks with squeeze-excitation ----------------------------------
class RegNetYBlock(nn.Module):
    def __init__(self, cin, cout, stride, group_width):
        super().__init__()
        self.a = _conv_bn(cin, cout, act=nn.ReLU)
        self.b = _conv_bn(cout, cout, 3, stride, groups=cout // group_width, act=nn.ReLU)
        self.se = SqueezeExcite(cout, max(1, cin // 4))
        self.c = _conv_bn(cout, cout)
        self.proj = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU()

    def forward(self, x):
        short = x if self.proj is None else self.proj(x)
        return self.relu(self.c(self.se(self.b(self.a(x)))) + short)


class RegNetY400MF(nn.Module):
    """400MF's widths (48, 104, 208, 440) at 1/3, group width 8, depths (1, 3, 6, 6) cut to
    (1, 2, 2, 1)."""

    def __init__(self, widths=(16, 32, 72, 144), depths=(1, 2, 2, 1), num_classes=10):
        super().__init__()
        self.stem = _conv_bn(3, 32, 3, 2, act=nn.ReLU)
        stages, c = [], 32
        for w, d in zip(widths, depths):
            stages += [RegNetYBlock(c if i == 0 else w, w, 2 if i == 0 else 1, 8) for i in range(d)]
            c = w
        self.trunk = nn.Sequential(*stages)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.trunk(self.stem(x)), 1), 1))


# ---- ConvNeXt-tiny: channels-last LayerNorm, GELU MLP, layer scale -------------------------------
class LayerNorm2d(nn.Module):
    """ConvNeXt's channels-first LayerNorm, written out as its reference code does."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    def __init__(self, c, scale=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(scale * torch.ones(c))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtTiny(nn.Module):
    """Tiny's dims (96, 192, 384, 768) at 1/6 and depths (3, 3, 9, 3) cut to (1, 1, 2, 1)."""

    def __init__(self, dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_classes=10):
        super().__init__()
        self.downsample = nn.ModuleList([nn.Sequential(nn.Conv2d(3, dims[0], 4, 4),
                                                       LayerNorm2d(dims[0]))])
        for a, b in itertools.pairwise(dims):
            self.downsample.append(nn.Sequential(LayerNorm2d(a), nn.Conv2d(a, b, 2, 2)))
        self.stages = nn.ModuleList(nn.Sequential(*[ConvNeXtBlock(c, 0.5) for _ in range(d)])
                                    for c, d in zip(dims, depths))
        self.norm, self.head = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean((-2, -1))))


# ---- GhostNet: ghost modules (cheap depthwise features concatenated) ------------------------------
def hard_sigmoid(x):
    return nn.functional.relu6(x + 3.0) / 6.0          # GhostNet's own gate


class GhostSE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, _divisible(c / 4, 4), 1), nn.Conv2d(_divisible(c / 4, 4), c, 1)

    def forward(self, x):
        s = torch.relu(self.reduce(nn.functional.adaptive_avg_pool2d(x, 1)))
        return x * hard_sigmoid(self.expand(s))


class GhostModule(nn.Module):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.cout, init = cout, (cout + 1) // 2
        act = nn.ReLU if relu else None
        self.primary = _conv_bn(cin, init, act=act)
        self.cheap = _conv_bn(init, init, 3, groups=init, act=act)

    def forward(self, x):
        a = self.primary(x)
        return torch.cat([a, self.cheap(a)], dim=1)[:, :self.cout]


class GhostBottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride, se):
        super().__init__()
        self.ghost1 = GhostModule(cin, mid)
        self.dw = _conv_bn(mid, mid, 3, stride, groups=mid) if stride > 1 else nn.Identity()
        self.se = GhostSE(mid) if se else nn.Identity()
        self.ghost2 = GhostModule(mid, cout, relu=False)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            _conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout))

    def forward(self, x):
        return self.ghost2(self.se(self.dw(self.ghost1(x)))) + self.shortcut(x)


class GhostNetStyle(nn.Module):
    """GhostNet's first bottlenecks (16-16, 48-24 s2, 72-24, 72-40 s2 SE, 120-40 SE) at 1/2."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = _conv_bn(3, 8, 3, 2, act=nn.ReLU)
        cfg = [(8, 8, 1, False), (24, 12, 2, False), (36, 12, 1, False), (36, 20, 2, True),
               (60, 20, 1, True)]
        blocks, c = [], 8
        for mid, out, s, se in cfg:
            blocks.append(GhostBottleneck(c, mid, out, s, se))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
        return self.classifier(torch.flatten(x, 1))


# ---- ResNeSt: split attention over radix branches --------------------------------------------
class SplitAttention(nn.Module):
    def __init__(self, cin, c, stride=1, radix=2, reduction=4):
        super().__init__()
        self.radix = radix
        self.conv = _conv_bn(cin, c * radix, 3, stride, groups=radix, act=nn.ReLU)
        inter = max(c * radix // reduction, 8)
        self.fc1, self.bn1, self.fc2 = nn.Conv2d(c, inter, 1), nn.BatchNorm2d(inter), nn.Conv2d(inter, c * radix, 1)

    def forward(self, x):
        x = self.conv(x)
        n = x.size(0)
        splits = torch.split(x, x.size(1) // self.radix, dim=1)
        gap = nn.functional.adaptive_avg_pool2d(sum(splits), 1)
        att = self.fc2(torch.relu(self.bn1(self.fc1(gap))))
        att = att.view(n, 1, self.radix, -1).transpose(1, 2)          # rSoftMax, cardinality 1
        att = torch.softmax(att, dim=1).reshape(n, -1, 1, 1)
        return sum(a * s for a, s in zip(torch.split(att, x.size(1) // self.radix, dim=1), splits))


class ResNeStBottleneck(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.reduce = _conv_bn(cin, c, act=nn.ReLU)
        self.split = SplitAttention(c, c, stride)
        self.expand = _conv_bn(c, 4 * c)
        self.down = _conv_bn(cin, 4 * c, 1, stride) if stride != 1 or cin != 4 * c else None

    def forward(self, x):
        short = x if self.down is None else self.down(x)
        return torch.relu(self.expand(self.split(self.reduce(x))) + short)


class ResNeStStyle(nn.Module):
    """ResNeSt-50's stem and one radix-2 bottleneck per stage, widths (64, ..., 512) at 1/8."""

    def __init__(self, widths=(8, 16, 32, 64), num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 16, 3, 2, act=nn.ReLU), _conv_bn(16, 16, 3, act=nn.ReLU),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, c = [], 16
        for i, w in enumerate(widths):
            blocks.append(ResNeStBottleneck(c, w, 1 if i == 0 else 2))
            c = 4 * w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


# id: (build, input (C, H, W), what was narrowed)
FAMILIES = {
    "efficientnet_b0": (EfficientNetB0, (3, 32, 32), "1/4 widths, 1 block per stage"),
    "mobilenet_v3_small": (MobileNetV3Small, (3, 32, 32), "1/2 widths, 8 of 11 bnecks"),
    "regnety_400mf": (RegNetY400MF, (3, 32, 32), "1/3 widths, depths 1-2-2-1"),
    "convnext_tiny": (ConvNeXtTiny, (3, 32, 32), "1/6 dims, depths 1-1-2-1"),
    "ghostnet_style": (GhostNetStyle, (3, 32, 32), "first 5 bottlenecks, 1/2 widths"),
    "resnest_style": (ResNeStStyle, (3, 32, 32), "1 bottleneck per stage, 1/8 widths"),
}
OPSETS = (11, 13, 17, "dynamo")   # "dynamo": torch.onnx.export(dynamo=True), opset 20, batch 1
