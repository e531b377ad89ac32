"""ONNX graphs written with onnx.helper the way the ONNX model zoo's Caffe2 exports are
(opset 9): Caffe's ceil-mode pooling as asymmetric pads, residual ``Sum``, batch norm as
``Unsqueeze`` + ``Mul`` + ``Add`` of constants, classifiers flattened by ``Reshape`` to a
fixed ``[1, N]``, opset-9 ``Softmax`` on 4-D scores, ShuffleNet's ``Reshape`` ->
``Transpose`` -> ``Reshape``. Channel widths are divided by ``width`` so the corpus is cheap;
depth and wiring follow the published networks. Weights are random (He-scaled)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 9


class Caffe2Graph:
    """Appends nodes and initializers; each method returns its output tensor's name."""

    def __init__(self, shape, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0
        self.shape = shape

    def _name(self, op):
        self.count += 1
        return f"{op.lower()}_{self.count}"

    def _node(self, op, inputs, **attrs):
        out = self._name(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def _init(self, hint, array):
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def _const(self, array, dtype=np.float32):
        out = self._name("Constant")
        tensor = numpy_helper.from_array(np.asarray(array, dtype), out + "_value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out

    def conv(self, x, cin, cout, k, s=1, pads=None, group=1, relu=True):
        p = k // 2 if pads is None else pads
        pads = [p] * 4 if isinstance(p, int) else list(p)
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2 / (cin // group * k * k))
        b = self.rng.normal(0, 0.05, cout)
        out = self._node("Conv", [x, self._init("W", w), self._init("b", b)], kernel_shape=[k, k],
                         strides=[s, s], pads=pads, group=group, dilations=[1, 1])
        return self._node("Relu", [out]) if relu else out

    def bn(self, x, c, relu=True):
        """Caffe2 style: per-channel constants unsqueezed to (C, 1, 1), then Mul and Add."""
        scale = self._node("Unsqueeze", [self._const(self.rng.uniform(0.5, 1.5, c))], axes=[1, 2])
        shift = self._node("Unsqueeze", [self._const(self.rng.normal(0, 0.1, c))], axes=[1, 2])
        out = self._node("Add", [self._node("Mul", [x, scale]), shift])
        return self._node("Relu", [out]) if relu else out

    def batchnorm(self, x, c, relu=True):
        values = [self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c),
                  self.rng.normal(0, 0.1, c), self.rng.uniform(0.5, 1.5, c)]
        out = self._node("BatchNormalization", [x] + [self._init("bn", v) for v in values],
                         epsilon=1e-5)
        return self._node("Relu", [out]) if relu else out

    def maxpool(self, x, k, s, pads=(0, 0, 0, 0)):
        return self._node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], pads=list(pads))

    def avgpool(self, x, k, s, pads=(0, 0, 0, 0)):
        return self._node("AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=list(pads))

    def lrn(self, x):
        return self._node("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def concat(self, xs):
        return self._node("Concat", xs, axis=1)

    def sum(self, xs):
        return self._node("Sum", xs)

    def flatten_fixed(self, x):
        return self._node("Reshape", [x, self._const([1, -1], np.int64)])

    def fc(self, x, cin, cout, relu=False):
        w = self.rng.standard_normal((cout, cin)) * np.sqrt(1 / cin)
        out = self._node("Gemm", [x, self._init("fc_w", w), self._init("fc_b", np.zeros(cout))],
                         transB=1)
        return self._node("Relu", [out]) if relu else out

    def dropout(self, x):
        """As the model zoo's opset-9 files write it: the mask output declared, never read."""
        out = self._node("Dropout", [x], ratio=0.5)
        self.nodes[-1].output.append(out + "_mask")
        return out

    def softmax(self, x):
        return self._node("Softmax", [x])          # opset 9: axis 1, inputs coerced to 2-D

    def shuffle(self, x, c, h, w, groups):
        out = self._node("Reshape", [x, self._const([1, groups, c // groups, h, w], np.int64)])
        out = self._node("Transpose", [out], perm=[0, 2, 1, 3, 4])
        return self._node("Reshape", [out, self._const([1, c, h, w], np.int64)])

    def model(self, out, name, out_shape=(1, 100)):
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info("data_0", TensorProto.FLOAT,
                                                             [1, *self.shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], initializer=self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 producer_name="caffe2-style (volnet tests)", ir_version=4)


def _w(n, width):
    return max(4, n // width)


def alexnet(width=8):
    """bvlc_alexnet: LRN, grouped conv2/4/5, ceil-mode pools as pads [0, 0, 1, 1]."""
    w = lambda n: _w(n, width)
    g = Caffe2Graph((3, 227, 227))
    x = g.lrn(g.conv("data_0", 3, w(96), 11, 4, pads=0))
    x = g.lrn(g.conv(g.maxpool(x, 3, 2), w(96), w(256), 5, group=2))
    x = g.conv(g.maxpool(x, 3, 2), w(256), w(384), 3)
    x = g.conv(g.conv(x, w(384), w(384), 3, group=2), w(384), w(256), 3, group=2)
    x = g.flatten_fixed(g.maxpool(x, 3, 2, pads=(0, 0, 1, 1)))       # 13 -> 6
    x = g.dropout(g.fc(x, w(256) * 36, w(4096), relu=True))
    x = g.dropout(g.fc(x, w(4096), w(4096), relu=True))
    return g.model(g.softmax(g.fc(x, w(4096), 100)), "bvlc_alexnet")


def _inception(g, x, cin, c1, c3r, c3, c5r, c5, pp, bn=False):
    def unit(t, a, b, k):
        return g.bn(g.conv(t, a, b, k, relu=False), b) if bn else g.conv(t, a, b, k)
    b1 = unit(x, cin, c1, 1)
    b2 = unit(unit(x, cin, c3r, 1), c3r, c3, 3)
    b3 = unit(unit(x, cin, c5r, 1), c5r, c5, 3 if bn else 5)
    pool = g.avgpool(x, 3, 1, (1, 1, 1, 1)) if bn else g.maxpool(x, 3, 1, (1, 1, 1, 1))
    return g.concat([b1, b2, b3, unit(pool, cin, pp, 1)]), c1 + c3 + c5 + pp


def googlenet(width=8, bn=False):
    """inception_v1 (bn=False: LRN, maxpool branches) or inception_v2 (BN-Inception:
    Unsqueeze/Mul/Add batch norm, average-pool branches)."""
    cfg = [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
           (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
           (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
           (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]
    g = Caffe2Graph((3, 224, 224))
    c = _w(64, width)
    x = g.conv("data_0", 3, c, 7, 2, relu=not bn)
    x = g.bn(x, c) if bn else x
    x = g.maxpool(x, 3, 2, (0, 0, 1, 1))                                # 112 -> 56
    x = x if bn else g.lrn(x)
    x = g.conv(g.conv(x, c, c, 1), c, _w(192, width), 3)
    c = _w(192, width)
    x = g.maxpool(x if bn else g.lrn(x), 3, 2, (0, 0, 1, 1))            # 56 -> 28
    for spec in cfg:
        if spec == "M":
            x = g.maxpool(x, 3, 2, (0, 0, 1, 1))
            continue
        x, c = _inception(g, x, c, *(_w(v, width) for v in spec), bn=bn)
    x = g.flatten_fixed(g.avgpool(x, 7, 1))
    return g.model(g.softmax(g.fc(g.dropout(x), c, 100)), "inception_v2" if bn else "inception_v1")


def resnet50(width=8):
    """Caffe2 ResNet-50: BatchNormalization (spatial) and residual ``Sum``."""
    g = Caffe2Graph((3, 224, 224))
    c = _w(64, width)
    x = g.maxpool(g.batchnorm(g.conv("data_0", 3, c, 7, 2, relu=False), c), 3, 2, (0, 0, 1, 1))
    for stage, (n, mid) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        mid, out = _w(mid, width), _w(mid * 4, width)
        for i in range(n):
            s = 2 if i == 0 and stage else 1
            y = g.batchnorm(g.conv(x, c, mid, 1, s, relu=False), mid)
            y = g.batchnorm(g.conv(y, mid, mid, 3, relu=False), mid)
            y = g.batchnorm(g.conv(y, mid, out, 1, relu=False), out, relu=False)
            short = x if i else g.batchnorm(g.conv(x, c, out, 1, s, relu=False), out, relu=False)
            x, c = g._node("Relu", [g.sum([y, short])]), out
    x = g.flatten_fixed(g._node("GlobalAveragePool", [x]))
    return g.model(g.softmax(g.fc(x, c, 100)), "resnet50")


def squeezenet(width=2):
    """SqueezeNet 1.1 as the zoo has it: ceil pools as pads, opset-9 Softmax on (N, C, 1, 1)."""
    g = Caffe2Graph((3, 224, 224))
    x = g.maxpool(g.conv("data_0", 3, _w(64, width), 3, 2, pads=0), 3, 2, (0, 0, 1, 1))
    c = _w(64, width)
    for spec in [(16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192),
                 (64, 256), (64, 256)]:
        if spec == "M":
            x = g.maxpool(x, 3, 2, (0, 0, 1, 1))
            continue
        s, e = _w(spec[0], width), _w(spec[1], width)
        sq = g.conv(x, c, s, 1)
        x, c = g.concat([g.conv(sq, s, e, 1), g.conv(sq, s, e, 3)]), 2 * e
    x = g.conv(g.dropout(x), c, 100, 1)
    return g.model(g.softmax(g.avgpool(x, 13, 1)), "squeezenet1.1", (1, 100, 1, 1))


def densenet121(width=4):
    """DenseNet-121: Unsqueeze/Mul/Add batch norm, concatenations, average-pool transitions."""
    growth, g = _w(32, width), Caffe2Graph((3, 224, 224))
    c = 2 * growth
    x = g.maxpool(g.bn(g.conv("data_0", 3, c, 7, 2, relu=False), c), 3, 2, (1, 1, 1, 1))
    for b, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            y = g.conv(g.bn(x, c), c, 4 * growth, 1, relu=False)
            y = g.conv(g.bn(y, 4 * growth), 4 * growth, growth, 3, relu=False)
            x, c = g.concat([x, y]), c + growth
        if b < 3:
            x = g.avgpool(g.conv(g.bn(x, c), c, c // 2, 1, relu=False), 2, 2)
            c //= 2
    x = g.flatten_fixed(g._node("GlobalAveragePool", [g.bn(x, c)]))
    return g.model(g.softmax(g.fc(x, c, 100)), "densenet121")


def shufflenet(width=2, groups=3):
    """ShuffleNet v1 (g=3): grouped 1x1 convs, channel shuffle by fixed-batch Reshape ->
    Transpose -> Reshape, Sum units and Concat units with a 3x3/2 average pool."""
    g = Caffe2Graph((3, 224, 224))
    c = 24
    x = g.maxpool(g.conv("data_0", 3, c, 3, 2), 3, 2, (1, 1, 1, 1))   # 56 x 56
    size = 56
    for stage, (n, out) in enumerate(zip((4, 8, 4), (240, 480, 960))):
        out = _w(out, width) // (2 * groups) * (2 * groups)
        for i in range(n):
            down = i == 0
            size //= 2 if down else 1
            add = out - c if down else out
            mid = add // 4 // groups * groups or groups
            y = g.conv(x, c, mid, 1, group=1 if stage == 0 and i == 0 else groups)
            y = g.shuffle(y, mid, size * (2 if down else 1), size * (2 if down else 1), groups)
            y = g.bn(g.conv(y, mid, mid, 3, 2 if down else 1, group=mid, relu=False), mid, False)
            y = g.conv(y, mid, add, 1, group=groups, relu=False)
            if down:
                x = g._node("Relu", [g.concat([g.avgpool(x, 3, 2, (1, 1, 1, 1)), y])])
            else:
                x = g._node("Relu", [g.sum([x, y])])
            c = out
    x = g.flatten_fixed(g.avgpool(x, 7, 1))
    return g.model(g.softmax(g.fc(x, c, 100)), "shufflenet")


def vgg19(width=8):
    """VGG-19: 3x3 stacks, fixed Reshape [1, -1] before the FC layers."""
    g = Caffe2Graph((3, 224, 224))
    x, c = "data_0", 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"]:
        if v == "M":
            x = g.maxpool(x, 2, 2)
        else:
            x, c = g.conv(x, c, _w(v, width), 3), _w(v, width)
    x = g.dropout(g.fc(g.flatten_fixed(x), c * 49, _w(4096, width), relu=True))
    x = g.dropout(g.fc(x, _w(4096, width), _w(4096, width), relu=True))
    return g.model(g.softmax(g.fc(x, _w(4096, width), 100)), "vgg19")


FAMILIES = {"bvlc_alexnet": alexnet, "inception_v1": googlenet,
            "inception_v2": lambda: googlenet(bn=True), "resnet50": resnet50,
            "squeezenet1.1": squeezenet, "densenet121": densenet121, "shufflenet": shufflenet,
            "vgg19": vgg19}
