"""The fast convolution kernel against its definitions: naive loops, finite differences, PyTorch.

Hyperparameters are drawn by Hypothesis over the issue's grid (stride 1-3, padding 0-2,
dilation 1-3, groups, odd sizes, batch 1, kernel = padded input size). Float64 throughout,
so tolerances are tight. The backward is checked three independent ways: central
differences, PyTorch autograd, and the lecture's identity (dx = full convolution of dout
with the spatially flipped filters, for stride 1).
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from volnet.functional import naive
from volnet.functional.conv import conv2d_backward, conv2d_forward
from volnet.tools.gradcheck import numerical_gradient

# every test here runs on the NumPy reference kernels and on the compiled ones
pytestmark = pytest.mark.usefixtures("both_kernel_paths")


@st.composite
def conv_configs(draw, max_stride=3):
    """(x shape, w shape, stride, padding, dilation, groups) with an output of at least 1x1."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = []
    for k, p, d in zip(kernel, padding, dilation):
        smallest = max(1, d * (k - 1) + 1 - 2 * p)      # the window exactly fills the padded input
        size.append(draw(st.integers(smallest, smallest + 5)))
    n = draw(st.integers(1, 2))
    return (n, cin, *size), (cout, cin // groups, *kernel), stride, padding, dilation, groups


def _arrays(config, seed=0):
    xs, ws = config[:2]
    rng = np.random.default_rng(seed)
    return rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])


def _rel(a, b):
    """Normwise relative error max|a - b| / max(max|a|, max|b|)."""
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


@given(conv_configs())
def test_fast_forward_equals_naive_loops(config):
    x, w, b = _arrays(config)
    _, _, stride, padding, dilation, groups = config
    out, _ = conv2d_forward(x, w, b, stride, padding, dilation, groups, keep_cache=False)
    ref = naive.conv2d(x, w, b, stride, padding, dilation, groups)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@given(conv_configs())
def test_backward_matches_central_differences(config):
    x, w, b = _arrays(config, seed=1)
    _, _, stride, padding, dilation, groups = config
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)

    def loss():
        return float(np.sum(conv2d_forward(x, w, b, stride, padding, dilation, groups,
                                           keep_cache=False)[0] * dout))

    for analytic, array in ((dx, x), (dw, w), (db, b)):
        assert analytic.shape == array.shape
        assert _rel(analytic, numerical_gradient(loss, array)) < 1e-7


@given(conv_configs())
def test_forward_and_backward_match_torch(config):
    x, w, b = _arrays(config, seed=3)
    _, _, stride, padding, dilation, groups = config
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dout = np.random.default_rng(4).standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, dilation, groups)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-10)
    for mine, theirs in ((dx, xt), (dw, wt), (db, bt)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


@given(conv_configs())
def test_no_bias_gives_no_bias_gradient(config):
    x, w, b = _arrays(config, seed=5)
    _, _, stride, padding, dilation, groups = config
    with_bias, _ = conv2d_forward(x, w, b, stride, padding, dilation, groups, keep_cache=False)
    out, cache = conv2d_forward(x, w, None, stride, padding, dilation, groups)
    np.testing.assert_allclose(out + b.reshape(1, -1, 1, 1), with_bias, rtol=1e-12, atol=1e-12)
    assert conv2d_backward(np.ones_like(out), cache)[2] is None


def _full_convolution_with_flipped_filters(dout, w, padding, dilation, groups):
    """The lecture's adjoint, built independently of the library's backward.

    Pad dout by the dilated kernel extent minus one, then correlate with the filters
    rotated by 180 degrees and with in/out channels swapped (per group). The result
    covers the padded input; cropping the padding gives dL/dx.
    """
    f, cg, kh, kw = w.shape
    fg = f // groups
    flipped = w[:, :, ::-1, ::-1].reshape(groups, fg, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    flipped = np.ascontiguousarray(flipped).reshape(groups * cg, fg, kh, kw)
    eh, ew = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
    full = naive.conv2d(np.pad(dout, ((0, 0), (0, 0), (eh, eh), (ew, ew))), flipped, None,
                        (1, 1), (0, 0), dilation, groups)
    ph, pw = padding
    return full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]


@given(conv_configs(max_stride=1))
def test_input_gradient_is_full_convolution_with_flipped_filters(config):
    """Lecture identity: for stride 1, dL/dx = full_conv(dL/dout, rot180(w))."""
    x, w, b = _arrays(config, seed=6)
    _, _, stride, padding, dilation, groups = config
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    dx = conv2d_backward(dout, cache)[0]
    expected = _full_convolution_with_flipped_filters(dout, w, padding, dilation, groups)
    assert expected.shape == x.shape
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-12)


def test_flipped_filter_identity_on_the_wide_path():
    """Many channels take the library's flipped-filter dx path; the identity must still hold."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((2, 32, 6, 5)), rng.standard_normal((8, 16, 3, 3))
    out, cache = conv2d_forward(x, w, None, (1, 1), (1, 2), (2, 1), 2)
    dout = rng.standard_normal(out.shape)
    expected = _full_convolution_with_flipped_filters(dout, w, (1, 2), (2, 1), 2)
    np.testing.assert_allclose(conv2d_backward(dout, cache)[0], expected, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_close_to_float64():
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out64, _ = conv2d_forward(x, w, b, (2, 2), (1, 1), (1, 1), 1, keep_cache=False)
    out32, cache = conv2d_forward(*(a.astype(np.float32) for a in (x, w, b)), (2, 2), (1, 1), (1, 1), 1)
    assert out32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in conv2d_backward(np.ones_like(out32), cache))
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs_give_identical_results():
    rng = np.random.default_rng(10)
    base = rng.standard_normal((5, 2, 9, 7))
    x = base.transpose(0, 1, 3, 2)[::-2]                 # negative stride, transposed
    w = rng.standard_normal((2, 3, 3, 4)).transpose(1, 0, 3, 2)[:, :, ::-1]
    out, cache = conv2d_forward(x, w, None, (1, 2), (1, 0), (2, 1), 1)
    ref, ref_cache = conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), None,
                                    (1, 2), (1, 0), (2, 1), 1)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape)
    for mine, theirs in zip(conv2d_backward(dout, cache)[:2], conv2d_backward(dout, ref_cache)[:2]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(3, 6, 16, 17, 4, 1), (2, 8, 20, 16, 6, 2), (1, 4, 3, 5, 8, 1),
                                   (2, 3, 16, 16, 10, 1), (1, 6, 16, 16, 6, 3)])
def test_pointwise_weight_gradient_matches_torch(shape, dtype):
    # 1x1 stride-1 layers: dw as one product per sample from 256 positions up (16x17,
    # 20x16, 16x16; the input's channels on the product's rows when C > F, dout's when
    # F > C, and with equal counts), the unrolled wide product below (3x5)
    n, c, h, w_, f, groups = shape
    rng = np.random.default_rng(h)
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = rng.standard_normal((f, c // groups, 1, 1)).astype(dtype)
    out, cache = conv2d_forward(x, w, None, (1, 1), (0, 0), (1, 1), groups)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dw = conv2d_backward(dout, cache)[1]
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    torch.nn.functional.conv2d(xt, wt, None, groups=groups).backward(
        torch.tensor(dout, dtype=torch.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert dw.dtype == dtype
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=tol, atol=tol * np.abs(dw).max())


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, want", [
    (7, 3, 1, 1, 1, 7), (7, 3, 2, 0, 1, 3), (10, 3, 3, 1, 2, 3), (5, 5, 1, 0, 1, 1)])
def test_output_sizes_follow_the_formula_on_every_call(size, kernel, stride, padding,
                                                       dilation, want):
    """(W - D(F-1) - 1 + 2P) // S + 1 by hand, the same on repeated calls (kept per shape),
    and equal to PyTorch's."""
    x = np.random.default_rng(0).standard_normal((1, 2, size, size + 1)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((3, 2, kernel, kernel)).astype(np.float32)
    args = ((stride, stride), (padding, padding), (dilation, dilation))
    first = conv2d_forward(x, w, None, *args, keep_cache=False)[0]
    second = conv2d_forward(x, w, None, *args, keep_cache=False)[0]
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                     padding=padding, dilation=dilation)
    assert first.shape[2] == want and first.shape == second.shape == tuple(ref.shape)
    np.testing.assert_allclose(first, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_a_window_larger_than_the_input_raises_on_every_call():
    """The error is raised each time (an invalid size is never kept), naming the fix."""
    from volnet.errors import ShapeError
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 5, 5), np.float32)
    for _ in range(2):
        with pytest.raises(ShapeError, match="larger than the padded input"):
            conv2d_forward(x, w, None, keep_cache=False)
