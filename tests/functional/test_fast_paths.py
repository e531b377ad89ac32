"""The special paths of the fast conv and pool kernels agree with PyTorch and the naive loops.

Each case targets one path: wide vs per-sample products, 1x1 as a plain product,
dx as a flipped-filter convolution vs col2im, several chunks per batch, tiled and
overlapping pooling windows. Float64 throughout, so tolerances are tight.
"""

import numpy as np
import pytest
import torch

from volnet.functional import conv_gemm, naive
from volnet.functional.conv import conv2d_backward, conv2d_forward
from volnet.functional.pool import maxpool2d_backward, maxpool2d_forward

# every test here runs on the NumPy reference kernels and on the compiled ones
pytestmark = pytest.mark.usefixtures("both_kernel_paths")

# (N, C, groups, F, H, W, (KH, KW), stride, (PH, PW), dilation): the path each exercises
CONV_CASES = [
    (1, 3, 1, 4, 5, 7, (3, 3), 1, (1, 1), 1),      # batch 1, odd sizes, col2im dx (C < 16)
    (2, 4, 2, 6, 7, 6, (3, 3), 2, (1, 1), 1),      # groups, stride 2
    (2, 32, 1, 8, 9, 9, (3, 3), 1, (1, 1), 1),     # dx as a flipped-filter convolution
    (2, 32, 4, 8, 9, 8, (3, 3), 1, (2, 2), 2),     # dilated + grouped adjoint convolution
    (3, 16, 16, 16, 6, 6, (3, 3), 1, (1, 1), 1),   # depthwise
    (2, 20, 1, 5, 8, 8, (1, 1), 1, (0, 0), 1),     # 1x1 as a plain product
    (2, 20, 1, 5, 8, 8, (1, 1), 2, (0, 0), 1),     # strided 1x1 (unrolled)
    (1, 18, 1, 4, 11, 9, (5, 5), 3, (2, 2), 1),    # stride 3 does not divide
    (2, 16, 1, 4, 5, 5, (3, 3), 1, (3, 3), 1),     # padding beyond the kernel: col2im dx
    (2, 17, 1, 3, 12, 13, (3, 1), 1, (1, 0), 1),   # rectangular kernel and padding
    (2, 16, 1, 4, 40, 40, (3, 3), 1, (1, 1), 1),   # per-sample (non-wide) products
]


def _torch_conv(x, w, b, stride, padding, dilation, groups, dout):
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("chunk_bytes", [conv_gemm.CHUNK_BYTES, 1])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_paths_match_torch(case, chunk_bytes, monkeypatch):
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", chunk_bytes)   # 1 byte: one sample per chunk
    n, c, g, f, h, w_, ks, s, pad, d = case
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 2**32)
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((f, c // g, *ks))
    b = rng.standard_normal(f)
    out, cache = conv2d_forward(x, w, b, (s, s), pad, (d, d), g)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    expected = _torch_conv(x, w, b, s, pad, d, g, dout)
    for got, want in zip((out, dx, dw, db), expected):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_conv_matches_naive_loops():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 6, 7, 9)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    out, _ = conv2d_forward(x, w, b, (2, 1), (1, 2), (1, 2), 2, keep_cache=False)
    np.testing.assert_allclose(out, naive.conv2d(x, w, b, (2, 1), (1, 2), (1, 2), 2), rtol=1e-12)


def test_float32_conv_stays_float32_and_close_to_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 24, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 24, 3, 3)).astype(np.float32)
    out, cache = conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == np.float32 and db is None
    ref, _ = conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# (input shape, kernel, stride, padding, ceil_mode): tiled reshape path and separable path
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), False),      # tiles exactly
    ((2, 2, 12, 12), (3, 3), (3, 3), (0, 0), False),    # tiles exactly, 3x3
    ((2, 3, 7, 7), (2, 2), (2, 2), (0, 0), False),      # odd size: separable path
    ((2, 3, 7, 7), (2, 2), (2, 2), (0, 0), True),       # ceil mode partial windows
    ((1, 2, 9, 7), (3, 3), (2, 2), (1, 1), False),      # overlapping, padded (ResNet stem)
    ((2, 2, 10, 11), (3, 2), (1, 3), (1, 1), False),    # rectangular windows and strides
    ((1, 1, 5, 5), (5, 5), (1, 1), (2, 2), False),      # window as large as the padded input
]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_paths_match_torch_including_ties(case, ties):
    shape, k, s, p, ceil = case
    rng = np.random.default_rng(len(str(case)) + ties)
    x = rng.standard_normal(shape)
    if ties:   # exact ties, as after a ReLU: the first maximum (row-major) must win
        x = np.maximum(np.round(x), 0.0)
    out, cache = maxpool2d_forward(x, k, s, p, ceil)
    np.testing.assert_array_equal(out, naive.maxpool2d(x, k, s, p, ceil))
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.functional.max_pool2d(xt, k, s, p, ceil_mode=ceil)
    dout = rng.standard_normal(out_t.shape)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(maxpool2d_backward(dout, cache), xt.grad.numpy(), rtol=1e-12, atol=0)


def test_maxpool_float32_inference_keeps_no_cache():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 6)).astype(np.float32)
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2), keep_cache=False)
    assert cache is None and out.dtype == np.float32


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 1, 1)])
def test_conv_row_blocks_of_one_image_match_torch(stride, padding, dilation, monkeypatch):
    # columns of 3 output rows per block: an image is cut into blocks, the last one short
    x = np.random.default_rng(stride + 10 * dilation).standard_normal((2, 5, 12, 11))
    w = np.random.default_rng(1).standard_normal((4, 5, 3, 3))
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", 3 * 5 * 9 * 11 * 8)
    out, cache = conv2d_forward(x, w, None, (stride, stride), (padding, padding),
                                (dilation, dilation), 1)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    dx, dw, _ = conv2d_backward(dout, cache)
    expected = _torch_conv(x, w, np.zeros(4), stride, padding, dilation, 1, dout)
    for got, want in zip((out, dx, dw), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_maxpool_backward_unaffected_by_changing_the_returned_output():
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6))
    out, cache = maxpool2d_forward(x, (3, 3), (2, 2), (1, 1))
    dout = np.random.default_rng(4).standard_normal(out.shape)
    expected = maxpool2d_backward(dout, cache)
    out *= -1.0                              # e.g. a user's in-place edit before backward
    np.testing.assert_array_equal(maxpool2d_backward(dout, cache), expected)
