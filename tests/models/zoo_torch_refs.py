"""Plain torch.nn versions of the zoo, written with torchvision's module names.

torchvision cannot be installed here (RELIABILITY.md #14), so these follow the
layouts of torchvision/models/{vgg,resnet,googlenet,inception,alexnet}.py; the
test loads volnet's state dict into them with ``strict=True``.
"""

from collections import OrderedDict

import torch
from torch import nn


class VGG(nn.Module):
    def __init__(self, config, batch_norm=False, num_classes=1000, hidden=4096, in_channels=3):
        super().__init__()
        layers, c = [], in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c * 49, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv3x3(width, width), nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block, counts, num_classes=1000, widths=(64, 128, 256, 512)):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, (w, n) in enumerate(zip(widths, counts)):
            setattr(self, f"layer{i + 1}", self._make_layer(block, w, n, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, width, n, stride):
        downsample = None
        if stride != 1 or self.inplanes != width * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, width * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(width * block.expansion))
        layers = [block(self.inplanes, width, stride, downsample)]
        self.inplanes = width * block.expansion
        layers += [block(self.inplanes, width) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class AlexNet(nn.Module):
    """torchvision.models.alexnet."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(9216, 4096), nn.ReLU(True),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class CaffeAlexNet(nn.Module):
    """bvlc_alexnet (the lecture's AlexNet): LRN, groups=2 in conv2/4/5, Caffe layer names."""

    def __init__(self, num_classes=1000):
        super().__init__()
        lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, 11, 4)), ("relu1", nn.ReLU()), ("norm1", lrn()),
            ("pool1", nn.MaxPool2d(3, 2)),
            ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)), ("relu2", nn.ReLU()),
            ("norm2", lrn()), ("pool2", nn.MaxPool2d(3, 2)),
            ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
            ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)), ("relu5", nn.ReLU()),
            ("pool5", nn.MaxPool2d(3, 2))]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(9216, 4096)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout()),
            ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout()),
            ("fc8", nn.Linear(4096, num_classes))]))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class InceptionV1(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, kernel_size=1),
                                     BasicConv2d(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, kernel_size=1),
                                     BasicConv2d(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNetAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1, self.fc2 = nn.Linear(2048, 1024), nn.Linear(1024, num_classes)

    def forward(self, x):
        x = torch.flatten(self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(torch.relu(self.fc1(x)))     # dropout is the identity in eval


def transform_input(x):
    """torchvision's GoogLeNet/Inception3 ``_transform_input``, verbatim arithmetic."""
    x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x_ch0, x_ch1, x_ch2), 1)


class GoogLeNet(nn.Module):
    """torchvision.models.googlenet(aux_logits=..., init_weights=False), transform_input off."""

    CFG = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64),
           (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64),
           (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64),
           (528, 256, 160, 320, 32, 128, 128), (832, 256, 160, 320, 32, 128, 128),
           (832, 384, 192, 384, 48, 128, 128)]
    NAMES = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]

    def __init__(self, num_classes=1000, aux_logits=False, transform_input=False):
        super().__init__()
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        for name, cfg in zip(self.NAMES, self.CFG):
            setattr(self, f"inception{name}", InceptionV1(*cfg))
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        if aux_logits:
            self.aux1, self.aux2 = GoogLeNetAux(512, num_classes), GoogLeNetAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        if self.transform_input:
            x = transform_input(x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if hasattr(self, "aux1") else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if hasattr(self, "aux2") else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1))), aux1, aux2


def _cat(*xs):
    return torch.cat(xs, 1)


def _pool3(x):
    return nn.functional.avg_pool2d(x, 3, 1, 1)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return _cat(self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                    self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                    self.branch_pool(_pool3(x)))


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return _cat(self.branch3x3(x),
                    self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                    nn.functional.max_pool2d(x, 3, 2))


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return _cat(self.branch1x1(x), b7, d, self.branch_pool(_pool3(x)))


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return _cat(self.branch3x3_2(self.branch3x3_1(x)), b7, nn.functional.max_pool2d(x, 3, 2))


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = _cat(self.branch3x3_2a(b3), self.branch3x3_2b(b3))
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = _cat(self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d))
        return _cat(self.branch1x1(x), b3, d, self.branch_pool(_pool3(x)))


class InceptionAux(nn.Module):
    def __init__(self, cin, num_classes):
        super().__init__()
        self.conv0 = BasicConv2d(cin, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x):
        x = self.conv1(self.conv0(nn.functional.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Inception3(nn.Module):
    """torchvision.models.inception_v3(aux_logits=True, transform_input=False, init_weights=False)."""

    def __init__(self, num_classes=1000, aux_logits=True):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        self.Mixed_5b, self.Mixed_5c = InceptionA(192, 32), InceptionA(256, 64)
        self.Mixed_5d, self.Mixed_6a = InceptionA(288, 64), InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.AuxLogits = InceptionAux(768, num_classes) if aux_logits else None
        self.Mixed_7a, self.Mixed_7b, self.Mixed_7c = InceptionD(768), InceptionE(1280), InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout()
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                     "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]:
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if self.AuxLogits is not None and x.shape[-1] >= 17 else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1))), aux


def _bc(cin, cout, k, s=1, p=0):
    return BasicConv2d(cin, cout, kernel_size=k, stride=s, padding=p)


def _avg_conv(cin, cout):
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _bc(cin, cout, 1))


class _Cat(nn.Module):
    """Concatenate the outputs of the named children (Cadene's Mixed_* / Inception_* modules)."""

    def __init__(self, **branches):
        super().__init__()
        for name, module in branches.items():
            setattr(self, name, module)

    def forward(self, x):
        return torch.cat([m(x) for m in self.children()], 1)


class InceptionC4(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch0 = _bc(1536, 256, 1)
        self.branch1_0 = _bc(1536, 384, 1)
        self.branch1_1a = _bc(384, 256, (1, 3), p=(0, 1))
        self.branch1_1b = _bc(384, 256, (3, 1), p=(1, 0))
        self.branch2_0 = _bc(1536, 384, 1)
        self.branch2_1 = _bc(384, 448, (3, 1), p=(1, 0))
        self.branch2_2 = _bc(448, 512, (1, 3), p=(0, 1))
        self.branch2_3a = _bc(512, 256, (1, 3), p=(0, 1))
        self.branch2_3b = _bc(512, 256, (3, 1), p=(1, 0))
        self.branch3 = _avg_conv(1536, 256)

    def forward(self, x):
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(x1), self.branch1_1b(x1),
                          self.branch2_3a(x2), self.branch2_3b(x2), self.branch3(x)], 1)


def _seq4(*specs):
    return nn.Sequential(*[_bc(*s) for s in specs])


class InceptionV4(nn.Module):
    """Cadene's pretrainedmodels InceptionV4 (features.N..., last_linear)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        a = lambda: _Cat(branch0=_bc(384, 96, 1), branch1=_seq4((384, 64, 1), (64, 96, 3, 1, 1)),
                         branch2=_seq4((384, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)),
                         branch3=_avg_conv(384, 96))
        b = lambda: _Cat(branch0=_bc(1024, 384, 1),
                         branch1=_seq4((1024, 192, 1), (192, 224, (1, 7), 1, (0, 3)),
                                       (224, 256, (7, 1), 1, (3, 0))),
                         branch2=_seq4((1024, 192, 1), (192, 192, (7, 1), 1, (3, 0)),
                                       (192, 224, (1, 7), 1, (0, 3)), (224, 224, (7, 1), 1, (3, 0)),
                                       (224, 256, (1, 7), 1, (0, 3))),
                         branch3=_avg_conv(1024, 128))
        self.features = nn.Sequential(
            _bc(3, 32, 3, 2), _bc(32, 32, 3), _bc(32, 64, 3, 1, 1),
            _Cat(maxpool=nn.MaxPool2d(3, 2), conv=_bc(64, 96, 3, 2)),
            _Cat(branch0=_seq4((160, 64, 1), (64, 96, 3)),
                 branch1=_seq4((160, 64, 1), (64, 64, (1, 7), 1, (0, 3)),
                               (64, 64, (7, 1), 1, (3, 0)), (64, 96, 3))),
            _Cat(conv=_bc(192, 192, 3, 2), maxpool=nn.MaxPool2d(3, 2)),
            a(), a(), a(), a(),
            _Cat(branch0=_bc(384, 384, 3, 2), branch1=_seq4((384, 192, 1), (192, 224, 3, 1, 1),
                                                            (224, 256, 3, 2)),
                 branch2=nn.MaxPool2d(3, 2)),
            b(), b(), b(), b(), b(), b(), b(),
            _Cat(branch0=_seq4((1024, 192, 1), (192, 192, 3, 2)),
                 branch1=_seq4((1024, 256, 1), (256, 256, (1, 7), 1, (0, 3)),
                               (256, 320, (7, 1), 1, (3, 0)), (320, 320, 3, 2)),
                 branch2=nn.MaxPool2d(3, 2)),
            InceptionC4(), InceptionC4(), InceptionC4())
        self.last_linear = nn.Linear(1536, num_classes)

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.avg_pool2d(x, x.shape[2], count_include_pad=False)
        return self.last_linear(torch.flatten(x, 1))
