"""The fast pooling kernels against naive loops, finite differences and PyTorch.

Max-pool inputs are permutations (distinct values), so the max is never at a kink,
except in the tie tests, which check the documented winner rule (first maximum in
row-major window order, as PyTorch) and that each output's gradient lands on exactly
one input. Float64 throughout.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from volnet.errors import ShapeError
from volnet.functional import naive
from volnet.functional.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    pool_output_size,
)
from volnet.runtime import backend
from volnet.tools.gradcheck import numerical_gradient


@st.composite
def pool_configs(draw):
    """(x shape, kernel, stride, padding, ceil_mode) with padding <= kernel / 2 and output >= 1."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, min(2, k // 2))) for k in kernel)
    size = [draw(st.integers(max(1, k - 2 * p), max(1, k - 2 * p) + 5)) for k, p in zip(kernel, padding)]
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size), kernel, stride, padding, draw(st.booleans())


def _distinct(shape, seed):
    """A shuffled arange: every value distinct, so every window has a unique maximum."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return rng.permutation(size).reshape(shape).astype(np.float64) / size - 0.5


def _torch_max(x, dout, kernel, stride, padding, ceil_mode):
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.max_pool2d(xt, kernel, stride, padding, ceil_mode=ceil_mode)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


def _torch_avg(x, dout, kernel, stride, padding, ceil_mode, include):
    xt = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.avg_pool2d(xt, kernel, stride, padding, ceil_mode, include)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy()


@given(pool_configs())
def test_maxpool_matches_naive_and_torch(config):
    shape, kernel, stride, padding, ceil_mode = config
    x = _distinct(shape, seed=0)
    out, cache = maxpool2d_forward(x, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(out, naive.maxpool2d(x, kernel, stride, padding, ceil_mode))
    dout = np.random.default_rng(1).standard_normal(out.shape)
    ref_out, ref_dx = _torch_max(x, dout, kernel, stride, padding, ceil_mode)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_allclose(maxpool2d_backward(dout, cache), ref_dx, rtol=1e-14, atol=1e-14)


@given(pool_configs(), st.booleans())
def test_avgpool_matches_naive_and_torch(config, include_pad):
    shape, kernel, stride, padding, ceil_mode = config
    x = np.random.default_rng(2).standard_normal(shape)
    out, cache = avgpool2d_forward(x, kernel, stride, padding, ceil_mode, include_pad)
    np.testing.assert_allclose(out, naive.avgpool2d(x, kernel, stride, padding, ceil_mode, include_pad),
                               rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    ref_out, ref_dx = _torch_avg(x, dout, kernel, stride, padding, ceil_mode, include_pad)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(avgpool2d_backward(dout, cache), ref_dx, rtol=1e-12, atol=1e-12)


@given(pool_configs(), st.booleans())
def test_pool_backward_matches_central_differences(config, include_pad):
    shape, kernel, stride, padding, ceil_mode = config
    x = _distinct(shape, seed=4)
    for forward, backward, extra in ((maxpool2d_forward, maxpool2d_backward, ()),
                                     (avgpool2d_forward, avgpool2d_backward, (include_pad,))):
        out, cache = forward(x, kernel, stride, padding, ceil_mode, *extra)
        dout = np.random.default_rng(5).standard_normal(out.shape)

        def loss(forward=forward, extra=extra, dout=dout):
            return float(np.sum(forward(x, kernel, stride, padding, ceil_mode, *extra,
                                        keep_cache=False)[0] * dout))

        analytic, numeric = backward(dout, cache), numerical_gradient(loss, x)
        assert np.abs(analytic - numeric).max() <= 1e-7 * np.abs(numeric).max()


@given(pool_configs())
def test_output_sizes_match_torch(config):
    shape, kernel, stride, padding, ceil_mode = config
    ref = torch.nn.functional.max_pool2d(torch.zeros(shape), kernel, stride, padding, ceil_mode=ceil_mode)
    assert pool_output_size(shape[2:], kernel, stride, padding, ceil_mode) == tuple(ref.shape[2:])


@pytest.mark.parametrize("size, kernel, stride, padding, ceil_mode, expected", [
    (112, 3, 2, 1, False, 56),     # ResNet stem pool
    (5, 2, 2, 0, True, 3),         # ceil mode keeps the partial window
    (5, 2, 2, 0, False, 2),
    (55, 3, 2, 0, False, 27),      # AlexNet pool1
    (5, 2, 2, 1, True, 3),         # the last window would start in the padding: dropped
])
def test_pool_output_size_edge_cases(size, kernel, stride, padding, ceil_mode, expected):
    ref = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, padding,
                                         ceil_mode=ceil_mode).shape[-1]
    assert ref == expected
    assert pool_output_size((size, size), (kernel,) * 2, (stride,) * 2, (padding,) * 2, ceil_mode) == (expected,) * 2


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 3))])
def test_maxpool_routes_gradient_only_to_the_argmax(kernel, stride):
    x = _distinct((2, 3, 7, 8), seed=6)
    out, cache = maxpool2d_forward(x, kernel, stride)
    dout = np.random.default_rng(7).standard_normal(out.shape)
    dx = maxpool2d_backward(dout, cache)
    expected = np.zeros_like(x)
    for n, c, i, j in np.ndindex(out.shape):
        r0, c0 = i * stride[0], j * stride[1]
        window = x[n, c, r0:r0 + kernel[0], c0:c0 + kernel[1]]
        u, v = np.unravel_index(np.argmax(window), window.shape)
        expected[n, c, r0 + u, c0 + v] += dout[n, c, i, j]
    np.testing.assert_allclose(dx, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kernel, stride, padding, ceil_mode",
                         [((2, 2), (2, 2), (0, 0), False),     # tiled windows
                          ((3, 3), (2, 2), (1, 1), True),      # overlapping, padded, ceil
                          ((2, 3), (1, 2), (0, 1), False)])
def test_maxpool_ties_have_exactly_one_winner_the_first(kernel, stride, padding, ceil_mode):
    """Constant and two-valued inputs: each output sends its gradient to one input, torch's choice."""
    rng = np.random.default_rng(8)
    for x in (np.ones((1, 2, 6, 7)), rng.integers(0, 2, (2, 2, 6, 7)).astype(np.float64)):
        out, cache = maxpool2d_forward(x, kernel, stride, padding, ceil_mode)
        ones = maxpool2d_backward(np.ones_like(out), cache)
        assert ones.sum() == out.size            # every window routed its 1 to exactly one place
        dout = rng.standard_normal(out.shape)
        dx = maxpool2d_backward(dout, cache)
        np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-12)
        np.testing.assert_allclose(dx, _torch_max(x, dout, kernel, stride, padding, ceil_mode)[1],
                                   rtol=1e-14, atol=1e-14)


def test_maxpool_tie_goes_to_first_in_row_major_order():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0] = [[0.0, 5.0], [5.0, 5.0]]
    out, cache = maxpool2d_forward(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(maxpool2d_backward(np.ones_like(out), cache)[0, 0], [[0, 1], [0, 0]])


def test_window_larger_than_padded_input_raises_with_sizes():
    x = np.zeros((1, 1, 3, 3))
    with pytest.raises(ShapeError, match=r"larger than the padded input \(3 \+ 2\*0 = 3\)"):
        maxpool2d_forward(x, (4, 4), (1, 1))
    with pytest.raises(ValueError, match="window"):
        avgpool2d_forward(x, (2, 6), (1, 1), (0, 1))


def test_non_contiguous_inputs_give_identical_results():
    x = _distinct((3, 2, 8, 9), seed=9).transpose(0, 1, 3, 2)[:, ::-1]
    for forward, backward in ((maxpool2d_forward, maxpool2d_backward),
                              (avgpool2d_forward, avgpool2d_backward)):
        out, cache = forward(x, (3, 2), (2, 2), (1, 1), True)
        ref, ref_cache = forward(np.ascontiguousarray(x), (3, 2), (2, 2), (1, 1), True)
        np.testing.assert_array_equal(out, ref)
        dout = np.random.default_rng(10).standard_normal(out.shape)
        np.testing.assert_array_equal(backward(dout, cache), backward(dout, ref_cache))


@pytest.mark.skipif(not backend.numba_available(), reason="numba missing")
@pytest.mark.parametrize("kernel, stride, padding", [((2, 2), (2, 2), (0, 0)),
                                                     ((3, 3), (2, 2), (1, 1))])
def test_maxpool_planes_split_over_block_threads_match_torch_bit_for_bit(
        monkeypatch, kernel, stride, padding):
    # training max pools run their planes on volnet's block threads (launch.run_planes):
    # the same answer as on one thread, and PyTorch's, on float32 as training runs them
    from volnet.runtime import block_threads, launch, thread_policy
    x = np.random.default_rng(3).standard_normal((4, 6, 20, 20)).astype(np.float32)
    x[0, 1, 3, 4] = np.nan                      # a NaN wins its window, as in PyTorch
    dout = np.random.default_rng(4).standard_normal(
        (4, 6) + pool_output_size((20, 20), kernel, stride, padding, False)).astype(np.float32)
    results = []
    for split_from in (1 << 40, 1):             # never split, always split
        monkeypatch.setattr(launch, "PLANES_SPLIT_ASLEEP", split_from)
        with thread_policy.use_threads(2), block_threads.section():
            out, cache = maxpool2d_forward(x, kernel, stride, padding)
            dx = maxpool2d_backward(dout, cache)
        results.append((out, dx))
    (out1, dx1), (out2, dx2) = results
    assert np.array_equal(out1, out2, equal_nan=True) and np.array_equal(dx1, dx2)
    xt = torch.from_numpy(x).requires_grad_()
    ot = torch.nn.functional.max_pool2d(xt, kernel, stride, padding)
    ot.backward(torch.from_numpy(dout))
    assert np.array_equal(out2, ot.detach().numpy(), equal_nan=True)
    finite = ~np.isnan(x)
    finite[0, 1] = False                        # the NaN's plane: PyTorch routes to its last
    assert np.array_equal(dx2[finite], xt.grad.numpy()[finite])


@pytest.mark.skipif(not backend.numba_available(), reason="numba missing")
@pytest.mark.parametrize("wide", [True, False])
def test_inference_2x2_pool_on_wide_planes_either_kernel(monkeypatch, wide):
    """Inference's whole 2x2/2 windows on planes 64+ wide: the 2x2 kernel's rows with
    AVX-512, max_values' flat pass without (it wins there at every width); both give
    PyTorch's maxima, NaN included."""
    from volnet.functional.compiled import intrinsics

    monkeypatch.setattr(intrinsics, "wide_vectors", lambda: wide)
    x = np.random.default_rng(4).standard_normal((2, 3, 66, 70)).astype(np.float32)
    x[0, 1, 5, 7] = np.nan
    with backend.use_kernels("numba"):
        out, cache = maxpool2d_forward(x, (2, 2), (2, 2), keep_cache=False)
    assert cache is None
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2).numpy()
    np.testing.assert_array_equal(out, want)
