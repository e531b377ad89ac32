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
