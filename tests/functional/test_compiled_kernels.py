"""Compiled ReLU, residual add+ReLU, bias add/sum, max pool, softmax cross-entropy and
optimizer kernels against the NumPy reference path and PyTorch, and the switch that
selects the reference path (VOLNET_KERNELS=numpy).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("numba")

from volnet.errors import NonFiniteError, ShapeError
from volnet.functional import activation as A
from volnet.functional.conv import pair
from volnet.functional.loss import softmax_cross_entropy
from volnet.functional.pool import avgpool2d_forward, maxpool2d_backward, maxpool2d_forward
from volnet.runtime import backend
from volnet.train.optim import SGD, Adagrad, Adam, RMSProp

DTYPES = [np.float32, np.float64]


def _both(fn):
    """fn() under the compiled kernels, then under the NumPy reference path."""
    with backend.use_kernels("numba"):
        fast = fn()
    with backend.use_kernels("numpy"):
        ref = fn()
    return fast, ref


def test_environment_variable_selects_the_reference_path():
    code = ("from volnet.functional import pool; from volnet.runtime import backend; import numpy as np; "
            "c = pool.maxpool2d_forward(np.ones((1, 1, 4, 4), np.float32), (2, 2), (2, 2))[1]; "
            "print(backend.active(), type(c[0]).__name__)")
    env = {**os.environ, "VOLNET_KERNELS": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["numpy", "tuple"]          # NumPy's cache: (padded input, column maxima)
    env["VOLNET_KERNELS"] = "numba"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["numba", "_Winners"]


@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**31 - 1))
def test_relu_and_residual_relu_are_exact(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    a, b, d = (rng.standard_normal(shape).round(1).astype(dtype) for _ in range(3))  # zeros too
    (o1, m1), (o2, m2) = _both(lambda: A.relu_forward(a))
    assert np.array_equal(o1, o2) and np.array_equal(m1, m2) and o1.dtype == dtype
    assert np.array_equal(*_both(lambda: A.relu_backward(d, m1)))
    (s1, k1), (s2, k2) = _both(lambda: A.add_relu(a, b))
    assert np.array_equal(s1, s2) and np.array_equal(k1, k2)
    at = torch.from_numpy(a + b).requires_grad_()
    torch.relu(at).backward(torch.from_numpy(d))
    assert np.array_equal(s1, torch.relu(at).detach().numpy())
    assert np.array_equal(A.relu_backward(d, k1), at.grad.numpy())


def test_relu_backward_gives_zero_where_the_gate_is_shut_even_for_nan():
    """NaN and inf in the upstream gradient where the ReLU's input was not positive count for
    nothing on every path, as PyTorch's ReLU backward (a select): the NumPy path multiplied
    by the mask and gave NaN there, so a convolution's gradients depended on which kernel
    ran it."""
    d = np.array([[np.nan, np.inf, -np.inf, 2.0], [1.0, np.nan, -3.0, 4.0]], np.float32)
    x = np.array([[-1.0, 0.0, -2.0, 1.0], [1.0, 3.0, 2.0, -1.0]], np.float32)
    mask = x > 0
    xt = torch.from_numpy(x).requires_grad_()
    torch.relu(xt).backward(torch.from_numpy(d))
    want = xt.grad.numpy()                       # [[0, 0, 0, 2], [1, nan, -3, 0]]
    for got in _both(lambda: A.relu_backward(d, mask)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.float32
    for dx, db in _both(lambda: A.relu_backward_channel_sum(d, mask)):
        np.testing.assert_array_equal(dx, want)
        np.testing.assert_array_equal(db, [1.0, np.nan, -3.0, 2.0])


def test_relu_passes_nan_like_numpy():
    x = np.array([np.nan, -1.0, 2.0, -0.0], np.float32)
    (o1, m1), (o2, m2) = _both(lambda: A.relu_forward(x))
    assert np.array_equal(o1, o2, equal_nan=True) and np.array_equal(m1, m2)


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_bias_add_and_channel_sum(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x, bias = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    fast, ref = _both(lambda: A.bias_add_(x.copy(), bias))
    assert np.array_equal(fast, ref)
    scale = rng.standard_normal(shape[1]).astype(dtype)     # the conv epilogue: scale, bias, ReLU
    fast, ref = _both(lambda: A.bias_add_(x.copy(), bias, True, scale))
    want = np.maximum(x.astype(np.float64) * scale[:, None, None] + bias[:, None, None], 0)
    assert np.allclose(fast, ref, rtol=1e-6, atol=1e-6) and np.allclose(fast, want, atol=1e-5)
    fast, ref = _both(lambda: A.channel_sum(x))
    want = x.astype(np.float64).sum(axis=(0, 2, 3))
    assert fast.dtype == dtype and np.allclose(fast, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                               atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("case", ["scale float64", "residual float64", "residual strided",
                                  "residual other shape", "bias strided", "float16"])
def test_bias_add_with_operands_the_kernels_do_not_take(case):
    """Operands of mixed dtypes, views or another shape go the NumPy way, with its answer
    (the compiled path's test runs once over all operands together)."""
    rng = np.random.default_rng(3)
    dtype = np.float16 if case == "float16" else np.float32
    out = rng.standard_normal((2, 4, 72, 72)).astype(dtype)   # large enough to compile
    bias = rng.standard_normal(8).astype(dtype)[::2] if case == "bias strided" else \
        rng.standard_normal(4).astype(dtype)
    scale = rng.standard_normal(4).astype(np.float64 if case == "scale float64" else dtype)
    residual = {"residual float64": rng.standard_normal(out.shape),
                "residual strided": rng.standard_normal((2, 4, 72, 144)).astype(dtype)[..., ::2],
                "residual other shape": rng.standard_normal((1, 4, 72, 72)).astype(dtype)
                }.get(case)
    want = out.astype(np.float64) * scale[:, None, None] + bias[:, None, None]
    if residual is not None:
        want = want + residual
    want = np.maximum(want, 0)
    fast, ref = _both(lambda: A.bias_add_(out.copy(), bias, True, scale, residual))
    assert fast.dtype == dtype and np.array_equal(fast, ref)
    tol = 1e-2 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(fast, want, rtol=tol, atol=tol)


@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_relu_backward_with_channel_sum_is_the_two_passes(shape, dtype, seed):
    # a conv's fused ReLU gradient and its bias gradient in one pass: the same bits as
    # relu_backward then channel_sum, and torch's gradients of relu(z + b)
    pytest.importorskip("volnet.functional.compiled.activation")
    rng = np.random.default_rng(seed)
    z, d = (rng.standard_normal(shape).round(1).astype(dtype) for _ in range(2))  # zeros too
    mask = z > 0
    dx, db = A.relu_backward_channel_sum(d, mask)
    two = A.relu_backward(d, mask)
    assert np.array_equal(dx, two) and np.array_equal(db, A.channel_sum(two))
    assert dx.dtype == db.dtype == dtype
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    bt = torch.zeros(shape[1], dtype=torch.float64, requires_grad=True)
    torch.relu(zt + bt[:, None, None]).backward(torch.tensor(d, dtype=torch.float64))
    assert np.array_equal(dx, zt.grad.numpy().astype(dtype))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.allclose(db, bt.grad.numpy(), rtol=tol, atol=tol)
    ref_dx, ref_db = _both(lambda: A.relu_backward_channel_sum(d, mask))[1]   # NumPy path
    assert np.array_equal(ref_dx, dx) and np.allclose(ref_db, db, rtol=tol, atol=tol)


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    hw = [draw(st.integers(max(1, k - 2 * p), k + 6)) for k, p in zip(kernel, padding)]
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *hw)
    return shape, kernel, stride, padding, draw(st.booleans())


@given(case=pool_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_max_pool_matches_torch_exactly_with_ties(case, dtype, seed):
    shape, kernel, stride, padding, ceil = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)          # many ties, routed as torch does
    xt = torch.from_numpy(x.copy()).requires_grad_()
    ot = TF.max_pool2d(xt, kernel, stride, padding, ceil_mode=ceil)
    d = rng.standard_normal(ot.shape).astype(dtype)
    ot.backward(torch.from_numpy(d))

    def run():
        out, cache = maxpool2d_forward(x, kernel, stride, padding, ceil)
        return out, maxpool2d_backward(d, cache)

    (o1, dx1), (o2, dx2) = _both(run)
    assert np.array_equal(o1, ot.detach().numpy()) and np.array_equal(o2, o1)
    assert np.array_equal(dx1, xt.grad.numpy()) and dx1.dtype == dtype
    assert np.array_equal(dx2, dx1)


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 7, 5), (3, 1, 2, 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_kernel_matches_torch_with_ties(shape, dtype):
    # the 2x2 stride-2 kernel (LeNet's, VGG's pools), odd sizes leaving a row/column out
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-2, 3, shape).astype(dtype)          # many ties, routed as torch does
    xt = torch.from_numpy(x.copy()).requires_grad_()
    ot = TF.max_pool2d(xt, 2, 2)
    d = rng.standard_normal(ot.shape).astype(dtype)
    ot.backward(torch.from_numpy(d))

    def run():
        out, cache = maxpool2d_forward(x, (2, 2), (2, 2))
        return out, maxpool2d_backward(d, cache)

    (o1, dx1), (o2, dx2) = _both(run)
    assert np.array_equal(o1, ot.detach().numpy()) and np.array_equal(o2, o1)
    assert np.array_equal(dx1, xt.grad.numpy()) and np.array_equal(dx2, dx1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_kernel_picks_the_general_kernels_winners_with_nan(dtype):
    pool = pytest.importorskip("volnet.functional.compiled.pool")
    rng = np.random.default_rng(5)
    x = rng.integers(-1, 2, (40, 6, 9)).astype(dtype)
    x[rng.random(x.shape) < 0.2] = np.nan                 # windows with one, two, four NaNs
    out = [np.empty((40, 3, 4), dtype) for _ in range(3)]
    arg = [np.empty((40, 3, 4), np.int32) for _ in range(3)]
    pool.max_forward(x, 2, 2, 2, 2, 0, 0, out[0], arg[0], True)
    pool.max_forward_2x2(x, out[1], arg[1], True)
    pool.max_forward_2x2.parallel(x, out[2], arg[2], True)   # the threaded variant (large maps)
    assert np.isnan(out[0]).any()
    for o, a in zip(out[1:], arg[1:]):
        assert np.array_equal(o, out[0], equal_nan=True) and np.array_equal(a, arg[0])


@pytest.mark.parametrize("width", [2, 31, 32, 33, 34, 65, 66])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_2x2_vector_rows_stay_inside_their_arrays(width, dtype):
    # the 2x2 kernel takes 16 windows of a row at a time with masked loads and stores (rows
    # of 1, 15-17 and 32-33 windows; an odd last column out): on arrays between NaN / -7
    # guards it reads and writes nothing past an edge, and gives the general kernel's bits
    pool = pytest.importorskip("volnet.functional.compiled.pool")
    guard = 64
    rng = np.random.default_rng(width)
    planes, h = 3, 5
    values = rng.integers(-2, 3, (planes, h, width)).astype(dtype)
    values[rng.random(values.shape) < 0.1] = np.nan
    size = (planes, h // 2, width // 2)

    def guarded(fill, shape, kind):
        buf = np.full(int(np.prod(shape)) + 2 * guard, fill, kind)
        return buf, buf[guard:guard + int(np.prod(shape))].reshape(shape)

    _, x = guarded(np.nan, values.shape, dtype)
    x[...] = values
    obuf, out = guarded(-7, size, dtype)
    abuf, arg = guarded(-7, size, np.int32)
    want, want_arg = np.empty(size, dtype), np.empty(size, np.int32)
    pool.max_forward(values, 2, 2, 2, 2, 0, 0, want, want_arg, True)
    pool.max_forward_2x2(x, out, arg, True)
    assert np.array_equal(out, want, equal_nan=True) and np.array_equal(arg, want_arg)
    for buf in (obuf, abuf):
        assert (buf[:guard] == -7).all() and (buf[-guard:] == -7).all()
    out[...] = -7
    pool.max_forward_2x2(x, out, np.empty((0, 0, 0), np.int32), False)   # no winners
    assert np.array_equal(out, want, equal_nan=True)
    assert (obuf[:guard] == -7).all() and (obuf[-guard:] == -7).all()


_PAGE_EDGE_SCRIPT = """
import ctypes, mmap, sys
import numpy as np
from volnet.functional.compiled import pool
page = mmap.PAGESIZE
buf = mmap.mmap(-1, 3 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + 2 * page), page, 0) == 0   # PROT_NONE
planes, h, w = 2, 4, int(sys.argv[1])
n = planes * h * w
x = np.frombuffer(buf, np.float32, n, 2 * page - 4 * n).reshape(planes, h, w)  # ends at the page
x[...] = np.arange(n).reshape(x.shape)
out = np.empty((planes, h // 2, w // 2), np.float32)
arg = np.empty(out.shape, np.int32)
pool.max_forward_2x2(x, out, arg, True)
assert np.array_equal(out, x[:, 1::2, 1:w // 2 * 2:2])
print("ok")
"""


@pytest.mark.parametrize("width", [2, 18, 32, 34])
def test_max_pool_2x2_reads_nothing_past_its_input(width):
    # the input ends where an unreadable page begins: a read past the last row's pairs
    # (the masked loads' lanes off) would crash the process, here a subprocess
    pytest.importorskip("volnet.functional.compiled.pool")
    run = subprocess.run([sys.executable, "-c", _PAGE_EDGE_SCRIPT, str(width)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


@given(case=pool_cases(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_max_pool_inference_kernel_matches_torch(case, dtype, seed):
    # keep_cache=False runs max_values (no winners): same maxima, padding and ceil_mode rules
    shape, kernel, stride, padding, ceil = case
    x = np.random.default_rng(seed).integers(-2, 3, shape).astype(dtype)
    want = TF.max_pool2d(torch.from_numpy(x), kernel, stride, padding, ceil_mode=ceil).numpy()
    fast, ref = _both(lambda: maxpool2d_forward(x, kernel, stride, padding, ceil,
                                                keep_cache=False)[0])
    assert np.array_equal(fast, want) and np.array_equal(ref, want) and fast.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 1, 1), (3, 2, 0), (3, 2, 1), (2, 1, 0)])
def test_max_pool_inference_kernel_gives_nan_where_the_general_one_does(dtype, kernel, stride,
                                                                        padding):
    pool = pytest.importorskip("volnet.functional.compiled.pool")
    rng = np.random.default_rng(kernel * 10 + stride)
    x = rng.standard_normal((20, 9, 11)).astype(dtype)
    x[rng.random(x.shape) < 0.05] = np.nan                # first, middle and last in windows
    size = [(n + 2 * padding - kernel) // stride + 1 for n in x.shape[1:]]
    out = [np.empty((20, *size), dtype) for _ in range(2)]
    pool.max_forward(x, kernel, kernel, stride, stride, padding, padding, out[0],
                     np.empty(out[0].shape, np.int32), True)
    pool.max_values(x, kernel, kernel, stride, stride, padding, padding, out[1])
    assert np.isnan(out[0]).any() and not np.isnan(out[0]).all()
    assert np.array_equal(out[1], out[0], equal_nan=True)


POOL_SHAPES = [
    ((1, 3, 112, 112), 3, 2, 1, False),     # ResNet's stem: wide planes, row by row
    ((1, 2, 111, 70), 3, 2, 0, True),       # GoogLeNet-style ceil_mode, odd height
    ((2, 3, 67, 65), (3, 2), (1, 3), (1, 0), True),   # stride 3: the running-maxima columns
    ((1, 5, 65, 80), 2, 2, 1, False),       # 2x2 stride 2 with padding
    ((1, 70, 14, 14), 3, 1, 1, True),       # Inception's 3x3/1: flat passes, plane groups
    ((3, 37, 28, 27), 3, 2, 0, True),       # narrow, stride 2, a partial last group
    ((1, 40, 9, 13), (2, 4), (3, 2), (1, 2), True),
    ((1, 33, 1, 1), 1, 1, 0, False),        # 1x1 maps
    ((1, 33, 1, 1), 2, 2, 1, True),
    ((1, 20, 2, 3), 3, 3, 1, True),
    ((1, 9, 13, 11), 5, 1, 2, False),      # 5x5/1 (SPPF): the general row and column loops
    ((1, 5, 12, 10), (3, 1), 1, (1, 0), False),     # one column per window
    ((1, 5, 12, 10), (1, 5), 1, (0, 2), True),
    ((2, 6, 1, 7), 3, 1, 1, True),          # 3x3/1 flat passes on planes of one row, of one
    ((1, 7, 9, 1), 3, 1, 1, False),         # column, of two rows (every row an edge row)
    ((1, 8, 2, 5), 3, 1, 1, False),
    ((1, 70, 14, 14), 2, 2, 0, True),       # whole 2x2/2 windows, narrow: row pairs, flat
    ((2, 40, 28, 30), 2, 2, 0, False),
    ((1, 9, 15, 13), 2, 2, 0, True),        # 2x2/2 with ceil_mode's partial windows: rows
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "ceil"), POOL_SHAPES)
def test_max_pool_inference_kernel_matches_torch_with_nan_and_inf(dtype, shape, kernel, stride,
                                                                  padding, ceil):
    # max_values' column passes (3- and 2-wide at strides 1 and 2, others), its row-by-row
    # and flat (3x3/1) paths, and NaN / -inf placed first, inside and last in windows: as torch, exactly
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.03] = np.nan
    x[rng.random(shape) < 0.1] = -np.inf
    x[0, 0, :4] = -np.inf                                   # whole windows of -inf
    want = TF.max_pool2d(torch.from_numpy(x), kernel, stride, padding, ceil_mode=ceil).numpy()
    k2, s2, p2 = (pair(v, "") for v in (kernel, stride, padding))
    fast, ref = _both(lambda: maxpool2d_forward(x, k2, s2, p2, ceil, keep_cache=False)[0])
    assert np.array_equal(fast, want, equal_nan=True) and fast.dtype == dtype
    assert np.array_equal(ref, want, equal_nan=True)
    if shape[2] > 2:
        assert np.isnan(want).any() and np.isneginf(want).any()


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding", "ceil"), POOL_SHAPES)
def test_avg_pool_compiled_kernel_matches_torch(dtype, shape, kernel, stride, padding, ceil,
                                                include_pad):
    # window_sums' sums divided by PyTorch's divisor; a NaN or an infinity in a window
    # gives what torch gives (NaN, or the infinity)
    rng = np.random.default_rng(sum(shape) + include_pad)
    x = rng.standard_normal(shape).astype(dtype)
    x[rng.random(shape) < 0.01] = np.nan
    x[rng.random(shape) < 0.01] = np.inf
    want = TF.avg_pool2d(torch.from_numpy(x), kernel, stride, padding, ceil_mode=ceil,
                         count_include_pad=include_pad).numpy()
    k2, s2, p2 = (pair(v, "") for v in (kernel, stride, padding))
    fast, ref = _both(lambda: avgpool2d_forward(x, k2, s2, p2, ceil, include_pad,
                                                keep_cache=False)[0])
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(fast, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(fast, ref, rtol=tol, atol=tol)
    assert fast.dtype == dtype


@pytest.mark.parametrize("name", ["max_values", "window_sums"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), [
    ((40, 70, 66), 3, 2, 1),        # wide planes, row by row
    ((70, 14, 14), 3, 1, 1),        # narrow planes, in groups (max: flat 3x3/1 passes)
    ((40, 70, 66), 3, 1, 1),        # max: flat 3x3/1 passes, one plane per group
    ((70, 14, 14), 2, 2, 0),        # max: whole 2x2/2 windows, row pairs then flat
])
def test_window_kernel_threads_give_the_one_thread_answer(shape, kernel, stride, padding, name):
    # the threaded variant (what calls of PARALLEL_MIN elements and up run): each block
    # of planes has its own scratch, so the answer is the serial one, bit for bit; max
    # pooling's 3x3/1 and 2x2/2 windows by their own kernels too (the general one is
    # right for them as well, so its answer is the reference)
    pool = pytest.importorskip("volnet.functional.compiled.pool")
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.01] = np.nan
    size = [(n + 2 * padding - kernel) // stride + 1 for n in shape[1:]]
    out = [np.empty((shape[0], *size), np.float32) for _ in range(4)]
    args = (kernel, kernel, stride, stride, padding, padding)
    getattr(pool, name).serial(x, *args, out[0])
    getattr(pool, name).parallel(x, *args, out[1])
    assert np.isnan(out[0]).any()
    assert np.array_equal(out[1], out[0], equal_nan=True)
    special = {(3, 1, 1): "max_values_same", (2, 2, 0): "max_values_pairs"}.get(
        (kernel, stride, padding))
    if name == "max_values" and special:
        getattr(pool, special).serial(x, out[2])
        getattr(pool, special).parallel(x, out[3])
        assert np.array_equal(out[2], out[0], equal_nan=True)
        assert np.array_equal(out[3], out[0], equal_nan=True)


def test_max_pool_inference_keeps_no_winners():
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    with backend.use_kernels("numba"):
        out, cache = maxpool2d_forward(x, (2, 2), (2, 2), keep_cache=False)
    assert cache is None and out.shape == (1, 2, 2, 2)


@given(n=st.integers(1, 9), c=st.integers(1, 12), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**31 - 1))
def test_softmax_cross_entropy_matches_torch(n, c, dtype, seed):
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal((n, c)) * 5).astype(dtype)
    labels = rng.integers(0, c, n)
    st_ = torch.from_numpy(scores.astype(np.float64)).requires_grad_()
    loss_t = TF.cross_entropy(st_, torch.from_numpy(labels))
    loss_t.backward()
    (l1, d1), (l2, d2) = _both(lambda: softmax_cross_entropy(scores, labels))
    tol = 2e-6 if dtype == np.float32 else 1e-12
    assert abs(l1 - loss_t.item()) <= tol * max(1, abs(loss_t.item())) and abs(l1 - l2) <= 10 * tol
    assert d1.dtype == dtype and np.allclose(d1, st_.grad.numpy(), rtol=tol, atol=tol)
    assert np.allclose(d1, d2, rtol=10 * tol, atol=10 * tol)


def test_softmax_cross_entropy_errors_are_the_reference_ones():
    scores = np.zeros((2, 3), np.float32)
    with backend.use_kernels("numba"):
        with pytest.raises(ShapeError, match="labels must lie in"):
            softmax_cross_entropy(scores, np.array([0, 3]))
        scores[1, 2] = np.inf
        with pytest.raises(NonFiniteError):
            softmax_cross_entropy(scores, np.array([0, 1]))


OPTIMIZERS = [
    (lambda: SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    (lambda: SGD(lr=0.1, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True)),
    (lambda: Adam(lr=0.01, weight_decay=0.1), lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1)),
    (lambda: RMSProp(lr=0.01, alpha=0.9), lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9)),
    (lambda: Adagrad(lr=0.1, weight_decay=1e-3),
     lambda p: torch.optim.Adagrad(p, lr=0.1, weight_decay=1e-3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make,make_torch", OPTIMIZERS)
def test_optimizer_update_is_the_reference_bit_for_bit_and_matches_torch(make, make_torch, dtype):
    rng = np.random.default_rng(0)
    start = {"w": rng.standard_normal((3, 5)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in start.items()} for _ in range(5)]

    def run():
        params, opt = {k: v.copy() for k, v in start.items()}, make()
        for g in grads:
            opt.step(params, g)
        return params

    fast, ref = _both(run)
    tparams = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in start.items()}
    topt = make_torch(list(tparams.values()))
    for g in grads:
        for k, p in tparams.items():
            p.grad = torch.from_numpy(g[k].copy())
        topt.step()
    for k in start:
        assert np.array_equal(fast[k], ref[k]) and fast[k].dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.allclose(fast[k], tparams[k].detach().numpy(), rtol=tol, atol=tol)


def test_training_steps_reuse_private_caches_but_never_returned_arrays():
    from volnet.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential

    rng = np.random.default_rng(0)
    net = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2), Flatten(),
                     Linear(3 * 4 * 4, 5, rng=rng))
    fresh = net.copy()
    x1, x2 = rng.standard_normal((2, 2, 2, 8, 8)).astype(np.float32)
    d = rng.standard_normal((2, 5)).astype(np.float32)
    with backend.use_kernels("numba"):
        out1 = net.forward(x1, training=True)
        mask, winners = net[1]._cache, net[2]._cache[0].arg
        dx1 = net.backward(d)
        assert net[2]._cache is None                     # backward released the cache
        saved = out1.copy(), dx1.copy()
        out2 = net.forward(x2, training=True)
        assert net[1]._cache is mask and net[2]._cache[0].arg is winners   # buffers reused
        dx2 = net.backward(d)
        assert np.array_equal(out1, saved[0]) and np.array_equal(dx1, saved[1])
        want_out = fresh.forward(x2, training=True)
        assert np.array_equal(out2, want_out) and np.array_equal(dx2, fresh.backward(d))
