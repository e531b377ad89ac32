"""Inference of 1x1 unpadded convolutions by BLAS, any stride (conv_gemm._pointwise, the
"gemm1x1" kernel; the compiled "pointwise" kernel is test_pointwise_conv.py's): the subsampled
input as the column matrix; batch 1 split by filters; a larger batch shared out by samples
over the block threads, each sample's epilogue (folded batch norm scale and bias, residual
sum, ReLU) run right after its product, and on 7x7 maps one wide product per thread whose
transpose into NCHW is the epilogue's pass (activation.bias_add_transposed). References:
PyTorch in float64 and the NumPy reference path (VOLNET_KERNELS=numpy: unfused layers, no
threads)."""

import numpy as np
import pytest
from batch_norm_stats import randomise_norm_stats
from torch_reference import conv_epilogue

from volnet.functional import conv_choice, conv_gemm
from volnet.functional.activation import bias_add_transposed
from volnet.functional.conv import conv2d_forward
from volnet.runtime import backend, block_threads

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


@pytest.fixture(autouse=True)
def outer_off(monkeypatch):
    """The strided gemm1x1 runs where the outer kernel is off (VOLNET_OUTER=0); with it on,
    inference gives these layers to it (tests/functional/test_outer_conv.py). Likewise the
    pointwise kernel (VOLNET_POINTWISE=0): with it on, batch 1 and large maps go to it
    (tests/functional/test_pointwise_conv.py)."""
    monkeypatch.setattr(conv_choice, "OUTER", False)
    monkeypatch.setattr(conv_choice, "POINTWISE", False)


@pytest.fixture
def scratch_names(monkeypatch):
    """The names of every block_threads.scratch request (which layout each thread used)."""
    names = []
    real = block_threads.scratch
    monkeypatch.setattr(block_threads, "scratch",
                        lambda name, size, dtype=np.float32: names.append(name)
                        or real(name, size, dtype))
    return names


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _torch(x, w, b, scale, residual, stride, relu):
    return conv_epilogue(x, w, b, scale, residual, relu, stride)


def _case(n, c, f, h, stride, with_residual, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed + n * 1000 + c * f + h)
    ho = (h - 1) // stride + 1
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = rng.standard_normal((f, c, 1, 1)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    scale = rng.uniform(0.5, 1.5, f).astype(dtype)
    residual = rng.standard_normal((n, f, ho, ho)).astype(dtype) if with_residual else None
    return x, w, b, scale, residual, ho


# (N, C, F, H, stride): odd channel and filter counts, batches 1, 3 (an uneven share per
# thread) and 8, 7x7 maps (wide), 9x9 and 14x14 (per sample), strides 2 and 3 (odd maps
# subsampled to 5x5, 3x3)
CASES = [(1, 13, 37, 7, 1), (1, 33, 17, 14, 2), (8, 13, 37, 7, 1), (8, 33, 17, 14, 1),
         (8, 24, 40, 14, 2), (3, 11, 19, 9, 1), (3, 9, 35, 9, 2), (8, 7, 5, 9, 3)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_pointwise_inference_with_fused_epilogue_matches_torch(two_threads, monkeypatch,
                                                               scratch_names, case,
                                                               with_residual):
    n, c, f, h, s = case
    x, w, b, scale, residual, ho = _case(n, c, f, h, s, with_residual)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)     # batch 1's small products split
    with backend.use_kernels("numba"):
        kernel = conv_choice.plan(x.shape, w.shape, (s, s), (0, 0), (1, 1), 1, (ho, ho),
                                  np.float32).forward
        out, cache = conv2d_forward(x, w, b, (s, s), keep_cache=False, relu=True, scale=scale,
                                    residual=None if residual is None else residual.copy())
    assert kernel == "gemm1x1" and cache is None
    assert out.shape == (n, f, ho, ho) and out.dtype == np.float32
    assert _rel(out, _torch(x, w, b, scale, residual, s, relu=True)) < 1e-5
    # the layout the rule picks: a wide product per thread only on maps under the threshold
    wide = n > 1 and ho * ho < conv_gemm.POINTWISE_WIDE_BELOW
    assert ("pointwise-out" in scratch_names) == wide


@pytest.mark.parametrize("n", [1, 2, 8])
@pytest.mark.parametrize("h", [7, 14])
def test_pointwise_without_epilogue_and_without_relu_matches_torch(two_threads, n, h):
    # no bias, no scale, no ReLU: the wide layout's transpose alone; and an epilogue that
    # adds the residual but does not rectify (negative outputs must stay)
    x, w, b, scale, residual, _ = _case(n, 21, 29, h, 2, True)
    with backend.use_kernels("numba"):
        bare, _ = conv2d_forward(x, w, None, (2, 2), keep_cache=False)
        summed, _ = conv2d_forward(x, w, b, (2, 2), keep_cache=False, scale=scale,
                                   residual=residual)
    assert _rel(bare, _torch(x, w, None, None, None, 2, relu=False)) < 1e-5
    want = _torch(x, w, b, scale, residual, 2, relu=False)
    assert _rel(summed, want) < 1e-5 and (summed < 0).any()


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_float64_is_exact(two_threads, n, stride):
    x, w, b, scale, residual, _ = _case(n, 19, 45, 7, stride, True, dtype=np.float64)
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, (stride, stride), keep_cache=False, relu=True,
                                scale=scale, residual=residual)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _torch(x, w, b, scale, residual, stride, relu=True),
                               rtol=1e-12, atol=1e-12)


def _bottleneck(c, mid, f, stride, seed):
    """A ResNet bottleneck (1x1 -> 3x3 -> 1x1, batch norms with live statistics) with a
    strided 1x1 projection shortcut: every 1x1 kind of ResNet-50 in one block."""
    import volnet as vn
    from volnet.layers import Residual, Sequential

    rng = np.random.default_rng(seed)
    body = Sequential(vn.Conv2d(c, mid, 1, bias=False, rng=seed), vn.BatchNorm2d(mid), vn.ReLU(),
                      vn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False,
                                rng=seed + 1),
                      vn.BatchNorm2d(mid), vn.ReLU(),
                      vn.Conv2d(mid, f, 1, bias=False, rng=seed + 2), vn.BatchNorm2d(f))
    shortcut = Sequential(vn.Conv2d(c, f, 1, stride=stride, bias=False, rng=seed + 3),
                          vn.BatchNorm2d(f))
    block = Residual(body, shortcut=shortcut, activation=vn.ReLU())
    return randomise_norm_stats(block, rng, spread=0.2)


@pytest.mark.parametrize("n", [1, 8])
@pytest.mark.parametrize("h", [7, 14])
def test_planned_bottleneck_equals_the_numpy_reference_path(two_threads, monkeypatch, n, h):
    net = _bottleneck(23, 11, 37, 2, seed=3)
    x = np.random.default_rng(n + h).standard_normal((n, 23, h, h)).astype(np.float32)
    with backend.use_kernels("numpy"):
        want = net.forward(x)                    # separate layers, one thread, no plan
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    with backend.use_kernels("numba"):
        outs = [net.forward(x) for _ in range(3)]     # unplanned, then planned twice
    for out in outs:
        assert out.shape == want.shape
        assert _rel(out, want) < 1e-5


def test_strided_1x1_is_gemm1x1_at_inference_and_im2col_in_training():
    def forward(training, stride=2, padding=0):
        ho = (14 + 2 * padding - 1) // stride + 1
        return conv_choice.plan((8, 64, 14, 14), (128, 64, 1, 1), (stride, stride),
                                (padding, padding), (1, 1), 1, (ho, ho), np.float32,
                                training=training).forward

    assert forward(training=False) == "gemm1x1"
    assert forward(training=True) == "im2col"     # keeps its columns for backward
    assert forward(training=True, stride=1) == "gemm1x1"
    assert forward(training=False, padding=1) != "gemm1x1"     # padded: im2col's zeros


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_add_transposed_matches_numpy(relu, with_residual, dtype):
    rng = np.random.default_rng(7)
    src = rng.standard_normal((13, 3, 5, 5)).astype(dtype)        # (C, N, H, W)
    bias = rng.standard_normal(13).astype(dtype)
    scale = rng.standard_normal(13).astype(dtype)
    residual = rng.standard_normal((3, 13, 5, 5)).astype(dtype) if with_residual else None
    want = src.transpose(1, 0, 2, 3) * scale[:, None, None] + bias[:, None, None]
    if with_residual:
        want = want + residual
    if relu:
        want = np.maximum(want, 0)
    out = np.full((3, 13, 5, 5), np.nan, dtype=dtype)
    with backend.use_kernels("numba"):
        got = bias_add_transposed(src, out, bias, relu, scale, residual)
    assert got is out
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    # a source that is not contiguous takes NumPy's path, with the same result
    out2 = np.full_like(out, np.nan)
    bias_add_transposed(np.asfortranarray(src), out2, bias, relu, scale, residual)
    np.testing.assert_allclose(out2, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("samples", [1, 3])
def test_wide_products_in_chunks_of_samples_match_torch(two_threads, monkeypatch, samples):
    # a buffer budget of 1 or 3 samples (14 filters x 49 positions x 4 bytes each) cuts each
    # thread's 5-6 samples into several wide products; the cuts must not change the answer
    x, w, b, scale, residual, _ = _case(11, 10, 14, 7, 1, True)
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", samples * 14 * 49 * 4)
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, (1, 1), keep_cache=False, relu=True, scale=scale,
                                residual=residual)
    assert _rel(out, _torch(x, w, b, scale, residual, 1, relu=True)) < 1e-5


def test_strided_pointwise_on_one_thread_matches_torch(monkeypatch):
    # VOLNET_KERNELS=numpy: one thread, the whole batch subsampled at once (a fresh array
    # above CHUNK_BYTES, the kept scratch buffer below)
    x, w, b, scale, residual, _ = _case(6, 12, 20, 9, 2, True)
    for budget in (1, 1 << 20):
        monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", budget)
        with backend.use_kernels("numpy"):
            out, _ = conv2d_forward(x, w, b, (2, 2), keep_cache=False, relu=True, scale=scale,
                                    residual=residual)
        assert _rel(out, _torch(x, w, b, scale, residual, 2, relu=True)) < 1e-5
