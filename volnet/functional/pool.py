"""Pooling kernels: max (with argmax for backprop), average, adaptive average.

Shapes: x (N, C, H, W) -> out (N, C, H_out, W_out). Window hyperparameters are
pairs ``(height, width)``. With ``ceil_mode`` the input is padded on the bottom
and right so that the last, partial window exists (as in Caffe and PyTorch).
"""

from __future__ import annotations

import math

import numpy as np

from volnet.functional import conv_choice, maxpool
from volnet.functional.conv import conv_output_size, window_view
from volnet.runtime import backend, launch

_KERNELS = "volnet.functional.compiled.pool"   # compiled twins, imported on first use
PAIR_WIDTH = 64     # from this width, inference's whole 2x2/2 windows take the 2x2 kernel's
#                     rows (64x112x112: 0.115 ms against max_values' 0.133); narrower planes
#                     max_values' flat pass (832x14x14: 0.072 -> 0.033). With AVX-512 only:
#                     without it the 2x2 kernel's 16-lane shuffles lose at every width, two
#                     threads, ms, max_values / 2x2: 1x64x56x56 0.044 / 0.158, 1x128x112x112
#                     0.444 / 2.00, 8x64x224x224 7.56 / 33.8 (benchmarks/README.md, 63)


def pool_output_size(hw, kernel_size, stride, padding, ceil_mode, what="pool"):
    """(H_out, W_out) for a pooling window; see :func:`conv_output_size`."""
    return tuple(
        conv_output_size(hw[i], kernel_size[i], stride[i], padding[i],
                         ceil_mode=ceil_mode, what=what)
        for i in range(2)
    )


def _pad_for_pool(x, kernel_size, stride, padding, out_size, value):
    """Pad so that every window of the output lies inside the array."""
    extra = [max(0, (out_size[i] - 1) * stride[i] + kernel_size[i] - (x.shape[2 + i] + 2 * padding[i]))
             for i in range(2)]
    ph, pw = padding
    if ph == pw == extra[0] == extra[1] == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + extra[0]), (pw, pw + extra[1])),
                  constant_values=value)


def _tiles(x, kernel_size, stride, padding, out_size) -> bool:
    """True when windows tile the input exactly: pooling is then a reshape."""
    return (tuple(kernel_size) == tuple(stride) and padding == (0, 0)
            and x.shape[2] == out_size[0] * kernel_size[0]
            and x.shape[3] == out_size[1] * kernel_size[1])


def maxpool2d_forward(x, kernel_size, stride, padding=(0, 0), ceil_mode=False, keep_cache=True,
                      reuse=None):
    """Max over each window; backward routes to the first maximum (row-major) as in PyTorch.

    The cache is opaque. Compiled path (``compiled/pool.py``): each window's winner,
    found in the same pass as the maximum. NumPy path: the input (padded with -inf
    when needed) and its column maxima, from which backward finds the winners (see
    ``maxpool``). ``reuse``: a previous cache of this layer whose winner array may be
    overwritten (compiled path; a training loop then allocates it once).
    """
    h, w = x.shape[2:]
    out_size = pool_output_size((h, w), kernel_size, stride, padding, ceil_mode)
    if x.dtype in (np.float32, np.float64) and x.size and backend.compiled(x.size):
        return _compiled_max_forward(x, kernel_size, stride, padding, out_size, keep_cache,
                                     reuse)
    x_pad = _pad_for_pool(x, kernel_size, stride, padding, out_size, -np.inf)
    out, inner = maxpool.separable_forward(x_pad, kernel_size, stride, out_size, keep_cache)
    cache = (inner, x.shape, kernel_size, stride, padding) if keep_cache else None
    return out, cache


def maxpool2d_backward(dout, cache):
    """Route each output gradient to the input position that won its window."""
    inner, x_shape, kernel_size, stride, padding = cache
    if isinstance(inner, _Winners):
        return _compiled_max_backward(dout, inner, x_shape)
    h, w = x_shape[2:]
    ph, pw = padding
    dx_pad = maxpool.separable_backward(dout, inner, kernel_size, stride)
    if dx_pad.shape[2:] == (h, w):
        return dx_pad
    return np.ascontiguousarray(dx_pad[:, :, ph:ph + h, pw:pw + w])


class _Winners:
    """Compiled max pool's cache: each window's winner, a flat int32 index into its plane."""

    __slots__ = ("arg",)

    def __init__(self, arg):
        self.arg = arg



def _compiled_max_forward(x, kernel_size, stride, padding, out_size, keep_cache, reuse):
    n, c, h, w = x.shape
    x3 = np.ascontiguousarray(x).reshape(n * c, h, w)
    out = np.empty((n * c,) + tuple(out_size), dtype=x.dtype)
    old = reuse[0].arg if reuse is not None and isinstance(reuse[0], _Winners) else None
    if not keep_cache:
        arg = np.empty((0, 0, 0), dtype=np.int32)
    elif old is not None and old.shape == out.shape:
        arg = old
    else:
        arg = np.empty(out.shape, dtype=np.int32)
    halves = (tuple(kernel_size) == tuple(stride) == (2, 2) and tuple(padding) == (0, 0)
              and tuple(out_size) == (h // 2, w // 2))     # 2x2 windows, every one whole
    if not keep_cache and not (halves and w >= PAIR_WIDTH and conv_choice.wide_vectors()):
        # inference: the maxima alone, no winners
        if halves and h % 2 == 0 and w % 2 == 0:
            launch.run(_KERNELS, "max_values_pairs", x.size, x3, out)
        elif (tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1)
              and tuple(padding) == (1, 1) and tuple(out_size) == (h, w)):
            launch.run(_KERNELS, "max_values_same", x.size, x3, out)
        else:
            launch.run(_KERNELS, "max_values", x.size, x3, *kernel_size, *stride, *padding,
                       out)
    elif halves:
        # the serial variant, its planes split over block threads (launch.run_planes): loaded
        # from numba's on-disk cache, the prange variant ran 3x slower than the serial one
        # (128x32x32x32, one thread: 8.5 against 2.8 ms; freshly compiled 2.8; numba issue
        # #8085; benchmarks/README.md section 49)
        launch.run_planes(_KERNELS, "max_forward_2x2", x.size, n * c, lambda p0, p1: (
            x3[p0:p1], out[p0:p1], arg[p0:p1] if keep_cache else arg, bool(keep_cache)))
    else:
        launch.run_planes(_KERNELS, "max_forward", x.size, n * c, lambda p0, p1: (
            x3[p0:p1], *kernel_size, *stride, *padding, out[p0:p1],
            arg[p0:p1] if keep_cache else arg, bool(keep_cache)))
    cache = (_Winners(arg), x.shape, kernel_size, stride, padding) if keep_cache else None
    return out.reshape((n, c) + tuple(out_size)), cache


def _compiled_max_backward(dout, inner, x_shape):
    n, c, h, w = x_shape
    d3 = np.ascontiguousarray(dout).reshape(inner.arg.shape)
    dx = np.empty((n * c, h, w), dtype=dout.dtype)
    launch.run_planes(_KERNELS, "max_backward", dx.size, dx.shape[0], lambda p0, p1: (
        d3[p0:p1], inner.arg[p0:p1], dx[p0:p1]))
    return dx.reshape(x_shape)


def _avg_divisor(hw, kernel_size, stride, padding, out_size, count_include_pad, dtype):
    """Per-window element counts (H_out, W_out), following PyTorch's rules."""
    counts = []
    for axis in range(2):
        size, k, s, p, o = hw[axis], kernel_size[axis], stride[axis], padding[axis], out_size[axis]
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)          # windows never count the ceil overhang
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(dtype)


def avgpool2d_forward(x, kernel_size, stride, padding=(0, 0), ceil_mode=False,
                      count_include_pad=True, keep_cache=True):
    """Mean over each window (zero padding; divisor as in PyTorch).

    Compiled path: the window sums by ``compiled/pool.py``'s ``window_sums``, then the
    divisor; NumPy path: sums over a strided window view.
    """
    n, c, h, w = x.shape
    out_size = pool_output_size((h, w), kernel_size, stride, padding, ceil_mode)
    (kh, kw), (ho, wo) = kernel_size, out_size
    divisor = _avg_divisor((h, w), kernel_size, stride, padding, out_size, count_include_pad, x.dtype)
    if x.dtype in (np.float32, np.float64) and x.size and backend.compiled(x.size):
        # the window sums in one compiled pass (NumPy's strided sums took 4.7 ms for a 2x2
        # pool of 64x112x112, benchmarks/README.md section 34)
        out = np.empty((n * c, ho, wo), dtype=x.dtype)
        launch.run(_KERNELS, "window_sums", x.size, np.ascontiguousarray(x).reshape(n * c, h, w),
                   *kernel_size, *stride, *padding, out)
        out = out.reshape(n, c, ho, wo)
    elif _tiles(x, kernel_size, stride, padding, out_size):
        out = x.reshape(n, c, ho, kh, wo, kw).sum(axis=(3, 5))
    else:
        x_pad = _pad_for_pool(x, kernel_size, stride, padding, out_size, 0.0)
        out = window_view(x_pad, kernel_size, stride, (1, 1), out_size).sum(axis=(2, 3))
    out /= divisor
    cache = (x.shape, divisor, kernel_size, stride, padding, out_size) if keep_cache else None
    return out, cache


def avgpool2d_backward(dout, cache):
    """Spread each output gradient evenly over its window."""
    x_shape, divisor, kernel_size, stride, padding, out_size = cache
    n, c, h, w = x_shape
    (kh, kw), (st_h, st_w), (ph, pw), (ho, wo) = kernel_size, stride, padding, out_size
    share = dout / divisor
    if (kh, kw) == (st_h, st_w) and (ph, pw) == (0, 0) and (h, w) == (ho * kh, wo * kw):
        return np.broadcast_to(share[:, :, :, None, :, None], (n, c, ho, kh, wo, kw)).reshape(x_shape)
    hp = max(h + 2 * ph, (ho - 1) * st_h + kh)
    wp = max(w + 2 * pw, (wo - 1) * st_w + kw)
    dx_pad = np.zeros((n, c, hp, wp), dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            dx_pad[:, :, i:i + st_h * (ho - 1) + 1:st_h, j:j + st_w * (wo - 1) + 1:st_w] += share
    return dx_pad[:, :, ph:ph + h, pw:pw + w]


def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_max_window(size: int, out: int) -> int:
    """The longest window of :func:`adaptive_bounds`, in closed form (no list of ``out``).

    With size = q*out + r, window i spans q + ceil(((i*r mod out) + r) / out); i*r mod out
    runs over the multiples of g = gcd(r, out) below out, so the longest is q (r = 0),
    q + 1 (r = g) or q + 2 (r > g).

    Example:
        >>> adaptive_max_window(10, 4), max(b - a for a, b in adaptive_bounds(10, 4))
        (3, 3)
    """
    q, r = divmod(int(size), int(out))
    return q if r == 0 else q + 1 if r == math.gcd(r, int(out)) else q + 2


def adaptive_avgpool2d_forward(x, out_size):
    """Average over adaptive windows so the output is exactly ``out_size``."""
    rows, cols = adaptive_bounds(x.shape[2], out_size[0]), adaptive_bounds(x.shape[3], out_size[1])
    out = np.empty(x.shape[:2] + tuple(out_size), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def adaptive_avgpool2d_backward(dout, x_shape):
    """Adjoint of :func:`adaptive_avgpool2d_forward`."""
    out_size = dout.shape[2:]
    rows, cols = adaptive_bounds(x_shape[2], out_size[0]), adaptive_bounds(x_shape[3], out_size[1])
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            dx[:, :, r0:r1, c0:c1] += (dout[:, :, i, j] / ((r1 - r0) * (c1 - c0)))[:, :, None, None]
    return dx
