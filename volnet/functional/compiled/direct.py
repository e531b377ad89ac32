"""Direct float32 convolution for any stride, padding, dilation and groups: the sum over taps
computed in registers from the packed input, with no unrolled columns (the kernels and the
identity they rest on: ``direct_kernels.py``).

Where it runs (chosen by ``volnet.functional.conv_choice``): the layers whose products are
too thin for BLAS to hide im2col's unrolling, measured in benchmarks/README.md (seventh
round): 3x3 layers of up to a few hundred input channels, the training forward of
Winograd-sized layers (exact, so faithful), stride-2 layers and the 3-channel stems.

Samples are shared out among the library's threads (``block_threads.run``); each thread
packs one sample at a time into its own scratch (the padded, phase-split input: about one
input plane set) and runs the products for it, so nothing but the output is allocated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from volnet.functional.compiled import direct_kernels as kernels
from volnet.runtime import block_threads

TILE_BYTES = 128 * 1024     # partial sums of one tile of outputs (all filters): with the
#                             input rows they read, in L2 (VGG conv1_2, 224x224: 109 -> 88 ms;
#                             ResNet stem 27 -> 23.5)
K_CHUNK = 128     # taps per pass over the outputs: a block's inputs (128 x 32 floats, ~24 KB
#                   with the unaligned reads' extra lines) stay in L1 across the filter blocks


@dataclass(frozen=True)
class Layout:
    """Where one sample's taps are read from in the packed input (see direct_kernels.py).

    Attributes:
        pitch: (Hq, Wq), the size of one phase plane; outputs are numbered oh * Wq + ow.
        off: (G, K) offset of tap (c, i, j) of each group, K = C/G * KH * KW.
        length: floats of one packed sample, with the tail the last register block reads.
        f_pad: filters per group, rounded up to whole register blocks.
        q_pad: output numbers (Ho * Wq), rounded up to whole register blocks.
        grad_off: (G, Kpad) ``off`` padded to whole dw register blocks (repeating tap 0:
            the extra taps' sums are computed and dropped).
    """

    pitch: tuple[int, int]
    off: np.ndarray
    length: int
    f_pad: int
    q_pad: int
    grad_off: np.ndarray


@functools.lru_cache(maxsize=1024)
def layout(x_shape, w_shape, stride, padding, dilation, groups, out_size) -> Layout:
    """The :class:`Layout` of a convolution (cached: made once per layer shape)."""
    c, h, w = x_shape[1:]
    f, cg, kh, kw = w_shape
    (sh, sw), (ph, pw), (dh, dw), (ho, _) = stride, padding, dilation, out_size
    hq, wq = -(-(h + 2 * ph) // sh), -(-(w + 2 * pw) // sw)
    plane = hq * wq
    off = np.empty((groups, cg, kh, kw), np.int64)
    for i in range(kh):
        a, r = (i * dh) % sh, (i * dh) // sh        # phase row and row within the phase
        for j in range(kw):
            b, t = (j * dw) % sw, (j * dw) // sw
            chans = np.arange(c).reshape(groups, cg)
            off[:, :, i, j] = ((chans * sh + a) * sw + b) * plane + r * wq + t
    off = off.reshape(groups, cg * kh * kw)
    f_pad = -(-(f // groups) // kernels.FILTERS) * kernels.FILTERS
    q_pad = -(-(ho * wq) // kernels.PIXELS) * kernels.PIXELS
    length = max(c * sh * sw * plane, int(off.max()) + q_pad)
    k_pad = -(-off.shape[1] // kernels.GRAD_TAPS) * kernels.GRAD_TAPS
    grad_off = np.repeat(off[:, :1], k_pad, axis=1)
    grad_off[:, :off.shape[1]] = off
    off.setflags(write=False)
    grad_off.setflags(write=False)
    return Layout((hq, wq), off, length, f_pad, q_pad, grad_off)


GRAD_TILE_BYTES = 256 * 1024   # dw: output gradients of one tile of outputs (all filters);
#                                 128 KB / 256 KB / 2 MB: ResNet stem 33 / 29 / 38 ms,
#                                 VGG conv1_2 111 / 94 / 120 ms (one thread, loaded machine)
GRAD_FLUSH = 8      # samples summed in float32 lanes between float64 flushes (dw)


def weight_grad(x, dout, w_shape, stride, padding, dilation, groups):
    """dw (F, C/G, KH, KW) float32 of the correlation of x giving dout: per sample, the
    output gradient times the packed input in registers, summed over samples in float64
    (every GRAD_FLUSH samples; within them in float32, as im2col's products sum)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dout = np.ascontiguousarray(dout, dtype=np.float32)
    n = x.shape[0]
    f, cg, kh, kw = w_shape
    fg = f // groups
    lay = layout(tuple(x.shape), tuple(w_shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups), tuple(dout.shape[2:]))
    off = lay.grad_off
    f_pad = -(-fg // kernels.GRAD_FILTERS) * kernels.GRAD_FILTERS
    k_pad = off.shape[1]
    count = max(1, min(block_threads.workers(), n))
    bounds = np.linspace(0, n, count + 1).astype(np.int64)
    q_tile = max(16, GRAD_TILE_BYTES // (4 * f_pad) // 16 * 16)
    args = (tuple(padding), tuple(stride), lay.pitch, GRAD_FLUSH, q_tile)

    def work(i):
        x_in = block_threads.scratch("direct_in", lay.length)
        d_in = block_threads.scratch("direct_dout", groups * f_pad * lay.q_pad).reshape(
            groups, f_pad, lay.q_pad)
        part = block_threads.scratch("direct_part", groups * f_pad * k_pad * 16).reshape(
            groups, f_pad, k_pad, 16)
        total = np.zeros((groups, f_pad, k_pad), np.float64)
        kernels.weight_grad_samples(x, dout, bounds[i], bounds[i + 1], off, x_in, d_in, part,
                                    total, *args)
        return total

    total = sum(block_threads.run(work, count))
    dw = total[:, :fg, :cg * kh * kw].astype(np.float32)
    return dw.reshape(f, cg, kh, kw)


def pack_filters(w: np.ndarray, groups: int, f_pad: int) -> np.ndarray:
    """(G, Fpad / FILTERS, K, FILTERS) float32: each group's filters, zero-padded to
    ``f_pad``, in blocks of one register block's filters, tap by tap (contiguous reads)."""
    f = w.shape[0]
    fg = f // groups
    wg = w.reshape(groups, fg, -1)
    wp = np.zeros((groups, f_pad, wg.shape[2]), np.float32)
    wp[:, :fg] = wg
    return np.ascontiguousarray(wp.reshape(groups, f_pad // kernels.FILTERS, kernels.FILTERS,
                                           -1).transpose(0, 1, 3, 2))


def forward(x, w, bias, stride, padding, dilation, groups, out_size, relu=False, scale=None):
    """(N, F, Ho, Wo) float32 correlation of x with w, times ``scale`` (None: 1) plus
    ``bias`` (None: none) per filter, rectified when ``relu``; any stride, padding,
    dilation and groups."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    f = w.shape[0]
    lay = layout(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups), tuple(out_size))
    wp = pack_filters(np.asarray(w, dtype=np.float32), groups, lay.f_pad)
    empty = np.zeros(0, np.float32)
    b = empty if bias is None else np.ascontiguousarray(bias, np.float32)
    s = empty if scale is None else np.ascontiguousarray(scale, np.float32)
    out = np.empty((n, f, *out_size), dtype=np.float32)
    # work items: samples shared out among the threads; with fewer samples than threads
    # (batch 1), each sample's filter blocks too (each thread packs the sample itself)
    threads = block_threads.workers()
    blocks = lay.f_pad // kernels.FILTERS
    parts = max(1, min(blocks, threads // max(n, 1)))
    fb_bounds = np.linspace(0, blocks, parts + 1).astype(np.int64)
    n_bounds = np.linspace(0, n, max(1, min(threads, n)) + 1).astype(np.int64)
    items = [(n_bounds[i], n_bounds[i + 1], fb_bounds[j], fb_bounds[j + 1])
             for i in range(len(n_bounds) - 1) for j in range(parts)]
    q_tile = max(kernels.PIXELS, TILE_BYTES // (4 * lay.f_pad) // kernels.PIXELS
                 * kernels.PIXELS)
    args = (tuple(padding), tuple(stride), lay.pitch, K_CHUNK, q_tile)

    def work(i):
        x_in = block_threads.scratch("direct_in", lay.length)
        prod = block_threads.scratch("direct_prod", lay.f_pad * lay.q_pad).reshape(
            lay.f_pad, lay.q_pad)
        kernels.forward_samples(x, *items[i], wp, lay.off, x_in, prod, out, s, b, bool(relu),
                                *args)

    block_threads.run(work, len(items))
    return out
