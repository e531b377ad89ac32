"""Which convolution kernel runs for a layer, chosen by its shape (see benchmarks/README.md).

* ``"winograd4"`` / ``"winograd2"``: Winograd F(4x4,3x3) / F(2x2,3x3) for float32 3x3
  stride-1 convolutions (dilated ones on their sub-grids) whose output maps are large
  enough that whole tiles dominate, and with enough channels for the per-point
  products to run near BLAS speed (``volnet/functional/compiled/winograd.py``).
* ``"depthwise"``: the direct compiled kernel for float32 depthwise layers
  (groups == in == out channels; ``compiled/depthwise.py``).
* ``"gemm1x1"``: a 1x1 stride-1 unpadded convolution is one matrix product per sample.
* ``"im2col"``: chunked im2col + matrix products (``conv_gemm``), every other case,
  every float64 layer (exact to 1e-10) and everything under ``VOLNET_KERNELS=numpy``.

Measured on this 2-core machine (one thread, CPU time, benchmarks/README.md): F(4x4)
beats im2col from 28x28 maps up (16x64x56x56: forward 31 vs 65 ms, dw 35 vs 69 ms;
16x128x28x28: 25 vs 48 ms) and loses below (16x256x14x14: 60 vs 41 ms; 7x7: 5x slower);
F(2x2) never beat both, so it is implemented and tested but not chosen.

Winograd is opt-in (``VOLNET_WINOGRAD=1``, or ``conv_choice.WINOGRAD = True``): the full
benchmark run on the idle machine at two threads (wall clock, the suite's measure) found it
slower than im2col where it applies (16x64x56x56 fwd+bwd 137 ms vs PyTorch's 77, im2col's
ratio 1.68 in the previous run; dilated 2.57 vs 1.97; VGG-16 inference at batch 1, where
each layer has one image, 0.86-1.26 s against im2col's 0.37-0.56 s in the same process).
"""

from __future__ import annotations

import os

import numpy as np

from volnet.functional import backend

WINOGRAD = os.environ.get("VOLNET_WINOGRAD", "0").strip() == "1"   # opt-in, see above
WINOGRAD_MIN_SIDE = 28      # output rows and columns per dilation sub-grid
WINOGRAD_MIN_CHANNELS = 8   # input and output channels


def choose(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype) -> str:
    """Name of the kernel that computes this convolution's forward pass."""
    c = x_shape[1]
    f, _, kh, kw = w_shape
    fast = np.dtype(dtype) == np.float32 and backend.compiled()
    if fast and groups > 1 and groups == c == f:
        return "depthwise"
    if kh == kw == 1 and tuple(stride) == (1, 1) and tuple(padding) == (0, 0):
        return "gemm1x1"
    if not fast:
        return "im2col"
    if winograd_fits(c, w_shape, stride, dilation, groups, out_size):
        return "winograd4"
    return "im2col"


def winograd_fits(c, w_shape, stride, dilation, groups, out_size) -> bool:
    """True, when Winograd is enabled, for a 3x3 stride-1 layer with equal dilations, enough
    channels and large maps."""
    f, _, kh, kw = w_shape
    d = dilation[0]
    return (WINOGRAD and groups == 1 and (kh, kw) == (3, 3) and tuple(stride) == (1, 1)
            and dilation[1] == d and min(c, f) >= WINOGRAD_MIN_CHANNELS
            and -(-min(out_size) // d) >= WINOGRAD_MIN_SIDE)


def tile_size(name: str) -> int:
    """Output tile side m of a Winograd kernel name."""
    return {"winograd4": 4, "winograd2": 2}[name]


def kernels(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype) -> dict:
    """{"forward", "input_grad", "weight_grad"}: the kernel each pass of this layer runs."""
    fwd = choose(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype)
    if fwd == "depthwise":
        return {"forward": fwd, "input_grad": fwd, "weight_grad": fwd}
    from volnet.functional.conv import _adjoint_is_conv
    f, _, kh, kw = w_shape
    dw = fwd if fwd.startswith("winograd") else "im2col"
    if _adjoint_is_conv(x_shape[1] // groups, (kh, kw), stride, padding, dilation):
        full = tuple(d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding))
        dx = choose((x_shape[0], f) + tuple(out_size), (x_shape[1], f // groups, kh, kw),
                    (1, 1), full, dilation, groups, x_shape[2:], dtype)
        dx = dx if dx.startswith("winograd") else "im2col (flipped filters)"
    else:
        dx = "col2im"
    return {"forward": fwd, "input_grad": dx, "weight_grad": dw}
