"""Kernel-level cases: the issue's conv and pool rows, and the float32 GEMM ceiling."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

from volnet.functional import conv_choice
from volnet.functional.conv import conv2d_backward, conv2d_forward
from volnet.functional.norm import batchnorm_backward, batchnorm_forward_train
from volnet.functional.pool import maxpool2d_backward, maxpool2d_forward

# (name, N, C, H=W, K, F, stride, padding, dilation[, groups]). Rows 1 and 3 are also the
# two shapes of issue 2 (the lecture's CIFAR layer and a VGG/ResNet 3x3 block); the last
# four are issue 12's (a VGG 224x224 layer, 28x28 and 7x7 3x3 layers, MobileNet depthwise).
CONV_ROWS = [
    ("conv N64 C3 32x32 K12 F3 P1 (CIFAR layer)", 64, 3, 32, 12, 3, 1, 1, 1),
    ("conv N64 C6 14x14 K16 F5 (LeNet conv2)", 64, 6, 14, 16, 5, 1, 0, 1),
    ("conv N16 C64 56x56 K64 F3 P1 (VGG/ResNet block)", 16, 64, 56, 64, 3, 1, 1, 1),
    ("conv N8 C3 227x227 K96 F11 S4 (AlexNet conv1)", 8, 3, 227, 96, 11, 4, 0, 1),
    ("conv N16 C256 14x14 K256 F3 P1", 16, 256, 14, 256, 3, 1, 1, 1),
    ("conv N32 C256 28x28 K64 F1 (1x1 reduction)", 32, 256, 28, 64, 1, 1, 0, 1),
    ("conv N16 C64 56x56 K64 F3 P2 D2 (dilated)", 16, 64, 56, 64, 3, 1, 2, 2),
    ("conv N4 C64 224x224 K64 F3 P1 (VGG conv1_2)", 4, 64, 224, 64, 3, 1, 1, 1),
    ("conv N16 C128 28x28 K128 F3 P1", 16, 128, 28, 128, 3, 1, 1, 1),
    ("conv N16 C512 7x7 K512 F3 P1", 16, 512, 7, 512, 3, 1, 1, 1),
    ("conv N16 C128 56x56 F3 P1 depthwise (MobileNet)", 16, 128, 56, 128, 3, 1, 1, 1, 128),
]

# (name, N, C, H=W): batch norm (training) + ReLU, forward and backward
NORM_ROWS = [
    ("BN+ReLU N16 C64 112x112 (ResNet-18 stem)", 16, 64, 112),
    ("BN+ReLU N16 C256 14x14 (ResNet-18 layer3)", 16, 256, 14),
]

POOL_ROWS = [
    ("max pool 2x2/2 on 64x64x56x56", 2, 2),
    ("max pool 3x3/2 on 64x64x56x56", 3, 2),
]


def _rel_err(a, b) -> float:
    b = np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def conv_kernels(row) -> dict:
    """The kernel each pass of a conv row runs (volnet.functional.conv_choice): the
    training plan, as the rows time a forward that keeps its cache, then backward."""
    _, n, c, h, k, f, s, p, d = row[:9]
    g = row[9] if len(row) > 9 else 1
    ho = (h + 2 * p - d * (f - 1) - 1) // s + 1
    return conv_choice.plan((n, c, h, h), (k, c // g, f, f), (s, s), (p, p), (d, d), g,
                            (ho, ho), np.float32, training=True).names()


def conv_case(row, rng):
    """(volnet_fn, torch_fn, max relative error, fwd+bwd FLOPs) for one conv row."""
    _, n, c, h, k, f, s, p, d = row[:9]
    g = row[9] if len(row) > 9 else 1
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = rng.standard_normal((k, c // g, f, f), dtype=np.float32)
    w /= np.float32(np.sqrt(c // g * f * f))
    b = rng.standard_normal(k, dtype=np.float32)
    st, pad, dil = (s, s), (p, p), (d, d)
    out, cache = conv2d_forward(x, w, b, st, pad, dil, g)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx, dw, db = conv2d_backward(dout, cache)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    dt = torch.from_numpy(dout)

    def torch_fn():
        xt.grad = wt.grad = bt.grad = None
        TF.conv2d(xt, wt, bt, s, p, d, g).backward(dt)

    torch_fn()
    ot = TF.conv2d(xt, wt, bt, s, p, d, g).detach().numpy()
    err = max(_rel_err(out, ot), _rel_err(dx, xt.grad), _rel_err(dw, wt.grad),
              _rel_err(db, bt.grad))

    def volnet_fn():
        _, cch = conv2d_forward(x, w, b, st, pad, dil, g)
        conv2d_backward(dout, cch)

    flops = 3 * 2 * out.size * (c // g) * f * f   # forward, dx and dw products
    return volnet_fn, torch_fn, err, flops


def pool_case(row, rng):
    """(volnet_fn, torch_fn, max relative error) for a max-pool fwd+bwd row."""
    _, k, s = row
    x = rng.standard_normal((64, 64, 56, 56), dtype=np.float32)
    out, cache = maxpool2d_forward(x, (k, k), (s, s))
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    dx = maxpool2d_backward(dout, cache)
    xt, dt = torch.from_numpy(x.copy()).requires_grad_(), torch.from_numpy(dout)

    def torch_fn():
        xt.grad = None
        TF.max_pool2d(xt, k, s).backward(dt)

    torch_fn()
    err = max(_rel_err(out, TF.max_pool2d(xt, k, s).detach().numpy()), _rel_err(dx, xt.grad))

    def volnet_fn():
        _, cch = maxpool2d_forward(x, (k, k), (s, s))
        maxpool2d_backward(dout, cch)

    return volnet_fn, torch_fn, err


def norm_case(row, rng):
    """(volnet_fn, torch_fn, max relative error) for batch norm (training) + ReLU fwd+bwd."""
    _, n, c, h = row
    x = rng.standard_normal((n, c, h, h), dtype=np.float32) * 2 + 0.5
    g = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.standard_normal(c, dtype=np.float32)
    out, _, _, cache = batchnorm_forward_train(x, g, b, 1e-5, relu=True)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    xt, gt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, g, b))
    with torch.no_grad():   # no gradient where the pre-activation is 0 within rounding:
        pre = TF.batch_norm(xt, None, None, gt, bt, True, 0.1, 1e-5).numpy()  # kink of ReLU
    dout[np.abs(pre) < 1e-4 * np.abs(pre).max()] = 0
    dx, dg, db = batchnorm_backward(dout, cache)
    dt = torch.from_numpy(dout)

    def torch_fn():
        xt.grad = gt.grad = bt.grad = None
        torch.relu(TF.batch_norm(xt, None, None, gt, bt, True, 0.1, 1e-5)).backward(dt)

    torch_fn()
    ot = torch.relu(TF.batch_norm(xt, None, None, gt, bt, True, 0.1, 1e-5)).detach().numpy()
    err = max(_rel_err(out, ot), _rel_err(dx, xt.grad), _rel_err(dg, gt.grad), _rel_err(db, bt.grad))

    def volnet_fn():
        _, _, _, cch = batchnorm_forward_train(x, g, b, 1e-5, relu=True)
        batchnorm_backward(dout, cch)

    return volnet_fn, torch_fn, err


def gemm_case(rng, size: int = 2048):
    """NumPy float32 matmul vs torch.mm on square matrices: the machine's GEMM ceiling."""
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    err = _rel_err(a @ b, (at @ bt).numpy())
    return (lambda: a @ b), (lambda: at @ bt), err, 2 * size ** 3
