"""LAYER_CASES: one spec per layer configuration, driving the gradient, property and torch tests.

Each case builds a float64 layer with random parameters (and random BN statistics), names
its per-example input shape, how to draw inputs (``normal``; ``distinct`` for max-pool so
no window ties; ``away`` keeps |x| >= 0.1 for ReLU kinks) and whether it runs in training
mode. Also here: the independent central-difference harness and ``to_torch``, which
rebuilds a volnet network as torch modules with the same weights and the same dotted names.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import volnet as vn
from volnet import layers as L


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], vn.Layer]
    shape: tuple[int, ...]
    inputs: str = "normal"
    training: bool = False

    def layer(self, dtype=np.float64, seed=0) -> vn.Layer:
        layer = self.build().astype(dtype)
        randomise(layer, np.random.default_rng(seed))
        return layer

    def x(self, n=2, dtype=np.float64, seed=1) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (n,) + self.shape
        if self.inputs == "distinct":
            size = int(np.prod(shape))
            return (rng.permutation(size).reshape(shape) / max(size, 1) - 0.5).astype(dtype)
        x = rng.standard_normal(shape)
        if self.inputs == "away":
            x = np.sign(x) * (0.1 + np.abs(x))
        if self.inputs == "positive":
            x = 0.5 + np.abs(x)
        return x.astype(dtype)


def randomise(net: vn.Layer, rng) -> None:
    """Random parameters (biases and BN affine included) and plausible BN running statistics."""
    for _, layer in net.named_layers():
        for name, p in layer.params.items():
            p[...] = rng.standard_normal(p.shape) * (0.5 if name == "weight" and p.ndim > 1 else 0.3)
            if type(layer).__name__.startswith("BatchNorm") and name == "weight":
                p[...] = rng.uniform(0.5, 1.5, p.shape)
        if "running_mean" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, layer.buffers["running_mean"].shape)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 1.5, layer.buffers["running_var"].shape)


def reseed_dropout(net: vn.Layer, seed: int = 0) -> None:
    """Give every Dropout a fresh generator so the next training forward draws the same mask."""
    for _, layer in net.named_layers():
        if isinstance(layer, vn.Dropout):
            layer.rng = np.random.default_rng(seed)


def _const(shape, seed=3):
    return np.random.default_rng(seed).standard_normal(shape)


def _conv_bn_block():
    body = vn.Sequential(vn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False), vn.BatchNorm2d(4), vn.ReLU(),
                         vn.Conv2d(4, 4, 3, padding=1, bias=False), vn.BatchNorm2d(4))
    shortcut = vn.Sequential(vn.Conv2d(2, 4, 1, stride=2, bias=False), vn.BatchNorm2d(4))
    return vn.Residual(body, shortcut=shortcut, activation=vn.ReLU())


def _inception():
    return vn.Concat(vn.Conv2d(3, 2, 1),
                     vn.Sequential(vn.Conv2d(3, 2, 1), vn.Tanh(), vn.Conv2d(2, 3, 3, padding=1)),
                     vn.Sequential(vn.MaxPool2d(3, stride=1, padding=1), vn.Conv2d(3, 1, 1)))


def _nested():
    return vn.Sequential(
        vn.Sequential(vn.Conv2d(3, 4, 3, padding=1), vn.Tanh()),
        vn.Residual(vn.Sequential(vn.Conv2d(4, 4, 3, padding=1), vn.Tanh(), vn.Conv2d(4, 4, 1))),
        vn.Concat(vn.Conv2d(4, 2, 1), vn.AvgPool2d(3, stride=1, padding=1)),
        vn.MaxPool2d(2), vn.Flatten(), vn.Dropout(0.25, rng=0), vn.Linear(6 * 2 * 2, 3))


LAYER_CASES = [
    # CONV: stride, padding, dilation, groups, no bias, pairs, 1x1, depthwise
    Case("conv", lambda: vn.Conv2d(3, 4, 3), (3, 6, 6)),
    Case("conv_stride_pad", lambda: vn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 7)),
    Case("conv_dilation", lambda: vn.Conv2d(2, 3, 3, dilation=2, padding=2), (2, 7, 6)),
    Case("conv_groups", lambda: vn.Conv2d(4, 6, 3, padding=1, groups=2), (4, 5, 5)),
    Case("conv_depthwise", lambda: vn.Conv2d(3, 3, 3, padding=1, groups=3), (3, 4, 5)),
    Case("conv_no_bias", lambda: vn.Conv2d(3, 2, 2, bias=False), (3, 5, 5)),
    Case("conv_pairs", lambda: vn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
         (2, 6, 7)),
    Case("conv_1x1", lambda: vn.Conv2d(4, 3, 1), (4, 4, 3)),
    Case("conv_kernel_is_input", lambda: vn.Conv2d(2, 3, 5), (2, 5, 5)),
    # transposed CONV: stride, padding, output_padding, dilation, groups, no bias, pairs
    Case("conv_transpose", lambda: vn.ConvTranspose2d(3, 4, 3), (3, 4, 4)),
    Case("conv_transpose_stride_pad", lambda: vn.ConvTranspose2d(3, 2, 4, stride=2, padding=1), (3, 3, 4)),
    Case("conv_transpose_output_padding", lambda: vn.ConvTranspose2d(2, 3, 3, stride=2, padding=1,
                                                                      output_padding=1), (2, 3, 3)),
    Case("conv_transpose_dilation_groups", lambda: vn.ConvTranspose2d(4, 6, 3, padding=1, groups=2,
                                                                       dilation=2), (4, 3, 4)),
    Case("conv_transpose_pairs_no_bias", lambda: vn.ConvTranspose2d(
        2, 3, (3, 2), stride=(1, 3), padding=(2, 0), output_padding=(0, 2), bias=False), (2, 4, 3)),
    Case("conv_transpose_wide_stride1", lambda: vn.ConvTranspose2d(2, 16, 3, padding=1), (2, 3, 3)),
    # POOL: distinct inputs for max
    Case("maxpool", lambda: vn.MaxPool2d(2), (2, 6, 6), "distinct"),
    Case("maxpool_overlap", lambda: vn.MaxPool2d(3, stride=2), (2, 7, 7), "distinct"),
    Case("maxpool_ceil", lambda: vn.MaxPool2d(2, ceil_mode=True), (2, 5, 5), "distinct"),
    Case("maxpool_pad", lambda: vn.MaxPool2d(3, stride=2, padding=1), (2, 6, 6), "distinct"),
    Case("maxpool_stride_gt_kernel", lambda: vn.MaxPool2d(2, stride=3), (2, 8, 7), "distinct"),
    Case("avgpool", lambda: vn.AvgPool2d(2), (2, 6, 6)),
    Case("avgpool_pad_included", lambda: vn.AvgPool2d(3, stride=2, padding=1), (2, 6, 7)),
    Case("avgpool_pad_excluded", lambda: vn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 6, 7)),
    Case("avgpool_ceil", lambda: vn.AvgPool2d(2, ceil_mode=True), (2, 5, 5)),
    Case("avgpool_ceil_pad_excluded", lambda: vn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
         (2, 6, 6)),
    Case("global_avgpool", lambda: vn.GlobalAvgPool2d(), (3, 4, 5)),
    Case("adaptive_avgpool", lambda: vn.AdaptiveAvgPool2d((3, 2)), (2, 7, 5)),
    Case("adaptive_avgpool_identity", lambda: vn.AdaptiveAvgPool2d(4), (2, 4, 4)),
    # resizing
    Case("upsample_nearest", lambda: vn.Upsample(scale_factor=2), (2, 3, 4)),
    Case("upsample_nearest_size", lambda: vn.Upsample(size=(5, 7)), (2, 3, 4)),
    Case("upsample_bilinear", lambda: vn.Upsample(scale_factor=(2, 3), mode="bilinear"), (2, 3, 4)),
    Case("upsample_bilinear_fractional", lambda: vn.Upsample(scale_factor=1.5, mode="bilinear"), (2, 4, 3)),
    Case("upsample_bilinear_size_down", lambda: vn.Upsample(size=(2, 5), mode="bilinear"), (2, 5, 3)),
    # FC and elementwise
    Case("linear", lambda: vn.Linear(5, 3), (5,)),
    Case("linear_no_bias", lambda: vn.Linear(4, 6, bias=False), (4,)),
    Case("relu", lambda: vn.ReLU(), (3, 4, 4), "away"),
    Case("leaky_relu", lambda: vn.LeakyReLU(0.1), (7,), "away"),
    Case("tanh", lambda: vn.Tanh(), (3, 5)),
    Case("sigmoid", lambda: vn.Sigmoid(), (2, 3, 3)),
    Case("softmax", lambda: vn.Softmax(), (6,)),
    Case("softmax_dim2", lambda: vn.Softmax(dim=2), (3, 4, 2)),
    Case("identity", lambda: vn.Identity(), (3, 2, 2)),
    Case("flatten", lambda: vn.Flatten(), (3, 2, 4)),
    Case("dropout_train", lambda: vn.Dropout(0.3, rng=0), (4, 5), training=True),
    Case("dropout_eval", lambda: vn.Dropout(0.3, rng=0), (4, 5)),
    # NORM
    Case("batchnorm2d_train", lambda: vn.BatchNorm2d(3), (3, 3, 4), training=True),
    Case("batchnorm2d_eval", lambda: vn.BatchNorm2d(3), (3, 3, 4)),
    Case("batchnorm1d_train", lambda: vn.BatchNorm1d(5), (5,), training=True),
    Case("batchnorm1d_3d_train", lambda: vn.BatchNorm1d(3), (3, 4), training=True),
    Case("batchnorm1d_eval", lambda: vn.BatchNorm1d(5), (5,)),
    Case("lrn", lambda: vn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=2.0), (5, 3, 3)),
    Case("lrn_even", lambda: vn.LocalResponseNorm(4, alpha=0.3, beta=0.6, k=1.0), (6, 2, 3)),
    # ONNX import: padding, shuffle, learned/bounded rectifiers, constants (vn.layers.*)
    Case("pad_asymmetric", lambda: L.ConstantPad2d((0, 1, 2, 0)), (2, 3, 4)),
    Case("pad_value", lambda: L.ConstantPad2d(1, value=-0.5), (2, 2, 3)),
    Case("channel_shuffle", lambda: L.ChannelShuffle(3), (6, 2, 3)),
    Case("prelu_shared", lambda: L.PReLU(), (3, 4, 4), "away"),
    Case("prelu_per_channel", lambda: L.PReLU(3, init=0.1), (3, 2, 3), "away"),
    Case("prelu_broadcast", lambda: L.PReLU(weight_shape=(4, 1)), (2, 4, 3), "away"),
    Case("elu", lambda: L.ELU(0.7), (3, 4), "away"),
    Case("clip", lambda: L.Clip(-0.5, 0.8), (2, 3, 3), "away"),
    Case("clip_min_only", lambda: L.Clip(0.2, None), (7,), "away"),
    Case("relu6", lambda: L.ReLU6(), (2, 3, 3), "away"),
    Case("log_softmax", lambda: L.LogSoftmax(), (6,)),
    Case("log_softmax_dim2", lambda: L.LogSoftmax(dim=2), (3, 4, 2)),
    Case("global_maxpool", lambda: L.GlobalMaxPool2d(), (3, 4, 5), "distinct"),
    Case("transpose", lambda: L.Transpose((2, 0, 1)), (2, 3, 4)),
    Case("narrow_channels", lambda: L.Narrow(1, 1, 2), (4, 2, 3)),
    Case("narrow_width", lambda: L.Narrow(3, 2, 1), (2, 3, 4)),
    Case("const_add_last_axis", lambda: L.ConstantOp("add", (4,), value=_const((4,))), (3, 2, 4)),
    Case("const_mul_channel", lambda: L.ConstantOp("mul", (3, 1, 1), value=_const((3, 1, 1))),
         (3, 2, 2)),
    Case("const_sub_broadcast_up", lambda: L.ConstantOp("sub", (3, 2, 1), value=_const((3, 2, 1))),
         (1, 2, 4)),
    Case("const_rsub", lambda: L.ConstantOp("sub", (1, 2, 1, 1), reverse=True,
                                            value=_const((1, 2, 1, 1))), (2, 3, 3)),
    Case("const_div", lambda: L.ConstantOp("div", (2, 1), value=1 + _const((2, 1)) ** 2), (2, 3)),
    Case("const_rdiv", lambda: L.ConstantOp("div", (), reverse=True, value=1.5), (2, 3), "away"),
    Case("const_max", lambda: L.ConstantOp("max", (3, 1, 1), value=_const((3, 1, 1))), (3, 2, 2)),
    Case("const_min_row", lambda: L.ConstantOp("min", (4,), value=_const((4,))), (2, 4)),
    # today's CNN families (EfficientNet, MobileNet v3, ConvNeXt, ResNeSt): gates, norms, reductions
    Case("silu", lambda: L.SiLU(), (3, 4, 4)),
    Case("hard_sigmoid", lambda: L.HardSigmoid(), (2, 3, 5), "away"),
    Case("hard_sigmoid_torch", lambda: L.HardSigmoid(1 / 6, 0.5), (2, 3, 5), "away"),
    Case("hard_swish", lambda: L.HardSwish(), (2, 3, 5), "away"),
    Case("erf", lambda: L.Erf(), (3, 4)),
    Case("gelu", lambda: L.GELU(), (2, 3, 3)),
    Case("gelu_tanh", lambda: L.GELU("tanh"), (7,)),
    Case("layer_norm_channels_last", lambda: L.LayerNorm(3), (4, 2, 3)),
    Case("layer_norm_two_axes", lambda: L.LayerNorm((2, 3), eps=1e-3), (4, 2, 3)),
    Case("layer_norm_no_affine", lambda: L.LayerNorm(5, elementwise_affine=False), (5,)),
    Case("reduce_mean_channels", lambda: L.Reduce("mean", (1,)), (4, 2, 3)),
    Case("reduce_sum_drop", lambda: L.Reduce("sum", (1, -1), keepdims=False), (3, 2, 4)),
    Case("reduce_max", lambda: L.Reduce("max", (2,)), (2, 5, 3), "distinct"),
    Case("power_square", lambda: L.Power(2), (3, 4)),
    Case("power_sqrt", lambda: L.Power(0.5), (3, 4), "positive"),
    Case("power_reciprocal", lambda: L.Power(-1), (3, 4), "positive"),
    Case("power_cube", lambda: L.Power(3), (2, 3)),
    Case("expand", lambda: L.Expand((3, 2, 4)), (3, 1, 4)),
    Case("expand_map", lambda: L.Expand((4, 2, 3)), (1, 2, 3)),
    Case("batched_linear", lambda: L.BatchedLinear(3, 5), (2, 4, 3)),
    Case("batched_linear_no_bias", lambda: L.BatchedLinear(4, 2, bias=False), (3, 4)),
    # CONTAINERS
    Case("sequential_lecture", lambda: vn.Sequential(vn.Conv2d(3, 4, 3, padding=1), vn.ReLU(), vn.MaxPool2d(2),
                                                     vn.Flatten(), vn.Linear(4 * 3 * 3, 5)), (3, 6, 6)),
    Case("residual_identity", lambda: vn.Residual(vn.Sequential(vn.Conv2d(3, 3, 3, padding=1), vn.Tanh(),
                                                                vn.Conv2d(3, 3, 3, padding=1))), (3, 4, 4)),
    Case("residual_projection_bn", _conv_bn_block, (2, 5, 5), training=True),
    Case("residual_projection_bn_eval", _conv_bn_block, (2, 5, 5)),
    Case("concat_inception", _inception, (3, 4, 5)),
    Case("nested", _nested, (3, 4, 4), training=True),
]

CASE_IDS = [c.id for c in LAYER_CASES]


@dataclass(frozen=True)
class JoinCase:
    """A layer over two computed tensors (``MultiInputLayer``): its op and the two per-example
    input shapes; ``distinct`` draws inputs with no ties (max/min)."""

    id: str
    op: str
    shapes: tuple[tuple[int, ...], tuple[int, ...]]
    inputs: str = "normal"

    def layer(self, dtype=np.float64):
        return L.MatMul() if self.op == "matmul" else L.BinaryOp(self.op)

    def xs(self, n=2, dtype=np.float64, seed=1):
        rng = np.random.default_rng(seed)
        out = []
        for shape in self.shapes:
            x = rng.standard_normal((n, *shape))
            if self.op == "div" and len(out) == 1:
                x = np.sign(x) * (0.5 + np.abs(x))    # divisors away from zero
            out.append(x.astype(dtype))
        if self.inputs == "distinct":
            out[1] = out[1] + 0.05 * np.sign(out[1] - out[0] + 1e-9)
        return tuple(out)


JOIN_CASES = [
    JoinCase("mul_equal", "mul", ((3, 4, 4), (3, 4, 4))),
    JoinCase("mul_channel_gate", "mul", ((3, 1, 1), (3, 4, 5))),
    JoinCase("mul_gate_second", "mul", ((3, 4, 5), (3, 1, 1))),
    JoinCase("add_broadcast_both", "add", ((3, 1, 5), (1, 4, 1))),
    JoinCase("sub_spatial_map", "sub", ((3, 4, 5), (1, 4, 5))),
    JoinCase("div_row", "div", ((2, 6), (1, 6))),
    JoinCase("div_gate", "div", ((3, 4, 4), (3, 1, 1))),
    JoinCase("max_equal", "max", ((4, 3), (4, 3)), "distinct"),
    JoinCase("min_broadcast", "min", ((2, 3, 1), (2, 3, 4)), "distinct"),
    JoinCase("matmul", "matmul", ((3, 4), (4, 2))),
    JoinCase("matmul_batched", "matmul", ((2, 3, 4), (2, 4, 5))),
    JoinCase("matmul_broadcast", "matmul", ((2, 3, 4), (1, 4, 2))),
]
JOIN_IDS = [c.id for c in JOIN_CASES]
TORCH_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                "max": torch.maximum, "min": torch.minimum, "matmul": torch.matmul}


# ---- independent central-difference harness ---------------------------------------------

def numeric_gradient(f, array, eps=1e-6):
    """Central differences of scalar f() w.r.t. every entry of ``array`` (perturbed in place)."""
    grad = np.zeros_like(array)
    flat = array.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        grad.reshape(-1)[i] = (plus - minus) / (2 * eps)
    return grad


def rel_error(a, b) -> float:
    """Normwise relative error max|a - b| / max(max|a|, max|b|); 0 for two zero arrays.

    Normwise, not elementwise: an elementwise CS231n ratio is dominated by entries whose
    true gradient is ~0 (finite-difference noise / noise), which says nothing about the layer.
    """
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


def gradient_errors(layer: vn.Layer, x: np.ndarray, training: bool, seed=2) -> dict[str, float]:
    """Relative error of backward vs central differences for the input and every parameter."""
    x = x.copy()
    buffers = layer.state_dict()
    reseed_dropout(layer)
    out = layer.forward(x, training, cache=True)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = {"input": layer.backward(upstream)}
    analytic.update({name: g.copy() for name, _, g in layer.named_params()})
    arrays = {"input": x, **{name: p for name, p, _ in layer.named_params()}}

    def loss():
        reseed_dropout(layer)
        return float(np.sum(layer.forward(x, training, cache=False) * upstream))

    errors = {name: rel_error(analytic[name], numeric_gradient(loss, arr)) for name, arr in arrays.items()}
    layer.load_state_dict(buffers)
    return errors


# ---- the same network in torch ------------------------------------------------------------

class TorchResidual(torch.nn.Module):
    def __init__(self, body, shortcut, activation, names):
        super().__init__()
        self.names = names
        for name, mod in zip(names, (body, shortcut, activation)):
            if mod is not None:
                self.add_module(name, mod)
        self.has_short, self.has_act = shortcut is not None, activation is not None

    def forward(self, x):
        out = getattr(self, self.names[0])(x)
        out = out + (getattr(self, self.names[1])(x) if self.has_short else x)
        return getattr(self, self.names[2])(out) if self.has_act else out


class TorchConcat(torch.nn.Module):
    def __init__(self, branches):
        super().__init__()
        for name, mod in branches:
            self.add_module(name, mod)

    def forward(self, x):
        return torch.cat([m(x) for m in self.children()], dim=1)


class TorchMask(torch.nn.Module):
    """Training-mode dropout applying the mask a volnet Dropout drew in its last forward
    (random streams cannot be shared across libraries)."""

    def __init__(self, source):
        super().__init__()
        self.source = source

    def forward(self, x):
        return x * torch.tensor(self.source._cache, dtype=x.dtype)


def _leaf_to_torch(layer):
    t = torch.nn
    extra = _import_layer_to_torch(layer)
    if extra is not None:
        return extra
    if isinstance(layer, vn.Conv2d):
        return t.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation, layer.groups, bias="bias" in layer.params)
    if isinstance(layer, vn.ConvTranspose2d):
        return t.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                 layer.padding, layer.output_padding, layer.groups,
                                 bias="bias" in layer.params, dilation=layer.dilation)
    if isinstance(layer, vn.Upsample):
        return t.Upsample(layer.size, layer.scale_factor, layer.mode,
                          align_corners=False if layer.mode == "bilinear" else None)
    if isinstance(layer, vn.Linear):
        return t.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params)
    if isinstance(layer, vn.MaxPool2d):
        return t.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, ceil_mode=layer.ceil_mode)
    if isinstance(layer, vn.AvgPool2d):
        return t.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode, layer.count_include_pad)
    if isinstance(layer, vn.GlobalAvgPool2d):
        return t.AdaptiveAvgPool2d(1)
    if isinstance(layer, vn.AdaptiveAvgPool2d):
        return t.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, (vn.BatchNorm2d, vn.BatchNorm1d)):
        cls = t.BatchNorm2d if isinstance(layer, vn.BatchNorm2d) else t.BatchNorm1d
        return cls(layer.num_features, layer.eps, layer.momentum)
    if isinstance(layer, vn.LocalResponseNorm):
        return t.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
    if isinstance(layer, vn.LeakyReLU):
        return t.LeakyReLU(layer.negative_slope)
    if isinstance(layer, vn.Softmax):
        return t.Softmax(layer.dim)
    if isinstance(layer, vn.Dropout):
        return t.Identity()          # eval mode; training masks are injected by the caller
    simple = {vn.ReLU: t.ReLU, vn.Tanh: t.Tanh, vn.Sigmoid: t.Sigmoid, vn.Identity: t.Identity,
              vn.Flatten: t.Flatten}
    return simple[type(layer)]()


class TorchConstantOp(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.op, self.reverse = layer.op, layer.reverse
        self.register_buffer("constant", torch.tensor(layer.buffers["constant"]))

    def forward(self, x):
        a, b = (self.constant, x) if self.reverse else (x, self.constant)
        return {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
                "max": torch.maximum, "min": torch.minimum}[self.op](a, b)


class TorchBroadcastPReLU(torch.nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return torch.where(x > 0, x, x * self.weight)


class TorchNarrow(torch.nn.Module):
    def __init__(self, dim, start, length):
        super().__init__()
        self.args = (dim, start, length)

    def forward(self, x):
        return x.narrow(*self.args)


class TorchPermute(torch.nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = (0,) + tuple(d + 1 for d in dims)

    def forward(self, x):
        return x.permute(self.dims)


def _import_layer_to_torch(layer):
    """torch twins of the layers the ONNX importer added (None for the others)."""
    t = torch.nn
    if isinstance(layer, L.ConstantPad2d):
        return t.ConstantPad2d(layer.padding, layer.value)
    if isinstance(layer, L.ChannelShuffle):
        return t.ChannelShuffle(layer.groups)
    if isinstance(layer, L.PReLU):
        return (TorchBroadcastPReLU(layer.weight_shape) if layer.weight_shape is not None
                else t.PReLU(layer.num_parameters))
    if isinstance(layer, L.ELU):
        return t.ELU(layer.alpha)
    if isinstance(layer, L.ReLU6):
        return t.ReLU6()
    if isinstance(layer, L.Clip):
        low, high = layer.min_value, layer.max_value
        return t.Hardtanh(low, high) if None not in (low, high) else _TorchClamp(low, high)
    if isinstance(layer, L.LogSoftmax):
        return t.LogSoftmax(layer.dim)
    if isinstance(layer, L.GlobalMaxPool2d):
        return t.AdaptiveMaxPool2d(1)
    if isinstance(layer, L.Transpose):
        return TorchPermute(layer.dims)
    if isinstance(layer, L.ConstantOp):
        return TorchConstantOp(layer)
    if isinstance(layer, L.Narrow):
        return TorchNarrow(layer.dim, layer.start, layer.length)
    return _family_layer_to_torch(layer)


class TorchFunction(torch.nn.Module):
    """A parameter-free torch twin given as a function of the input."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _family_layer_to_torch(layer):
    """torch twins of the layers of today's CNN families (None for the others)."""
    t = torch.nn
    if isinstance(layer, L.SiLU):
        return t.SiLU()
    if isinstance(layer, L.HardSigmoid):
        return TorchFunction(lambda x: torch.clamp(x * layer.alpha + layer.beta, 0, 1))
    if isinstance(layer, L.HardSwish):
        return t.Hardswish()
    if isinstance(layer, L.Erf):
        return TorchFunction(torch.erf)
    if isinstance(layer, L.GELU):
        return t.GELU(approximate=layer.approximate)
    if isinstance(layer, L.LayerNorm):
        return t.LayerNorm(layer.normalized_shape, layer.eps, layer.elementwise_affine)
    if isinstance(layer, L.Reduce):
        fn = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[layer.op]
        return TorchFunction(lambda x: fn(x, dim=layer.axes, keepdim=layer.keepdims))
    if isinstance(layer, L.Power):
        return TorchFunction(lambda x: torch.pow(x, layer.exponent))
    if isinstance(layer, L.Expand):
        return TorchFunction(lambda x: x.expand(x.shape[0], *layer.shape))
    if isinstance(layer, L.BatchedLinear):
        return t.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params)
    return None


class _TorchClamp(torch.nn.Module):
    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x):
        return torch.clamp(x, self.low, self.high)


def to_torch(layer: vn.Layer, dtype=torch.float64, training=False) -> torch.nn.Module:
    """The same network as torch modules, weights and buffers copied under the same dotted keys.

    With ``training``, each Dropout becomes a module applying the mask that the volnet
    layer drew in its last training forward (so run volnet first).
    """
    module = _structure(layer, training)
    module.to(dtype)
    state = {k: torch.tensor(v) for k, v in layer.state_dict().items()}
    module.load_state_dict(state, strict=True)
    return module


def _structure(layer, masks):
    if isinstance(layer, vn.Residual):
        names = [name for name, _ in layer.named_children()]
        body_name = names[0]
        short_name = names[1] if layer.shortcut is not None else "shortcut"
        return TorchResidual(_structure(layer.body, masks), layer.shortcut and _structure(layer.shortcut, masks),
                             layer.activation and _structure(layer.activation, masks),
                             (body_name, short_name, "activation"))
    if isinstance(layer, vn.Concat):
        return TorchConcat([(name, _structure(child, masks)) for name, child in layer.named_children()])
    if isinstance(layer, vn.Sequential):
        return torch.nn.Sequential(OrderedDict(
            (name, _structure(child, masks)) for name, child in layer.named_children()))
    if isinstance(layer, vn.Dropout) and masks:
        return TorchMask(layer)
    return _leaf_to_torch(layer)


if __name__ == "__main__":     # python tests/layers/layer_cases.py: worst gradcheck error per family
    worst: dict[str, tuple[float, str]] = {}
    for case in LAYER_CASES:
        errs = gradient_errors(case.layer(), case.x(), case.training)
        family = case.id.split("_")[0]
        worst[family] = max(worst.get(family, (0.0, "")), (max(errs.values()), case.id))
    for family, (err, case_id) in worst.items():
        print(f"{family:12s} {err:.1e}  ({case_id})")
