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

from volnet.functional import weight_cache
from volnet.functional.compiled import direct_kernels as kernels
from volnet.functional.compiled import epilogue, intrinsics
from volnet.runtime import block_threads

TILE_BYTES = 128 * 1024     # partial sums of one tile of outputs (all filters): with the
#                             input rows they read, in L2 (VGG conv1_2, 224x224: 109 -> 88 ms;
#                             ResNet stem 27 -> 23.5)
_NO_MASK = np.zeros((0, 0, 0, 0), np.bool_)   # forward_samples' "no ReLU gate to write"
K_CHUNK = 128     # taps per pass over the outputs: a block's inputs (128 x 32 floats, ~24 KB
#                   with the unaligned reads' extra lines) stay in L1 across the filter blocks
SPLIT_MIN_TAPS = 64   # a pass (forward, dx or dw) of fewer taps per filter (C/G x KH x KW:
#   multiply-adds per element of its output maps or of dout) streams a few bytes of memory
#   per multiply-add: it splits over the threads only from SPLIT_MIN_TAPS_ELEMENTS elements
#   of output (dout for dw). Below, a second core gains it less than the hand-off costs
#   after an idle gap (the helper wakes 0.1-2.6 ms late on a 2-core VM); above, its stream
#   is long enough (several ms) for the second core's bandwidth to pay. In-process A/B on a
#   2-core EPYC, median ms after the suite's 0.1 s gap, split / not: the CIFAR net's b128
#   step (3->12 3x3, 1.6M output elements) 13.9 / 13.0, 15.2 / 14.8 (forward), 16.1 / 15.2,
#   16.9 / 15.4 (dw), 16.0 / 14.1 (both); LeNet b64 (1->6 5x5, 0.2M) 8.32 / 7.49, 8.82 /
#   8.84, 7.52 / 7.79; the VGG-style b128 step (3->32 3x3, 4.2M) 176.3 / 181.8, 184.9 /
#   190.4 and 159.6 / 164.7 (both; 178.6 / 162.9 and 194.5 / 184.6 in two earlier runs; the
#   full suite's VGG-style row read 0.87-0.92 with it unsplit, 0.79-0.83 split:
#   benchmarks/README.md, 64).
#   The bits are the same either way.
SPLIT_MIN_TAPS_ELEMENTS = 1 << 21


def _split_count(taps: int, elements: int) -> int:
    """Threads a direct pass of ``taps`` taps per filter over ``elements`` output (or dout)
    elements splits over: block_threads.split_count of its multiply-adds (same bits however
    split), or 1 for a pass of few taps over few elements (SPLIT_MIN_TAPS)."""
    if taps < SPLIT_MIN_TAPS and elements < SPLIT_MIN_TAPS_ELEMENTS:
        return 1
    return block_threads.split_count(elements * taps, same_bits=True)


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
    return _finish(off.reshape(groups, cg * kh * kw), (hq, wq), c * sh * sw * plane,
                   f // groups, ho)


def _finish(off, pitch, planes_size, filters_per_group, out_rows) -> Layout:
    """The Layout of tap offsets ``off`` (G, K) into ``planes_size`` floats of planes of
    ``pitch``, for outputs of ``out_rows`` rows."""
    f_pad = -(-filters_per_group // kernels.FILTERS) * kernels.FILTERS
    q_pad = -(-(out_rows * pitch[1]) // kernels.PIXELS) * kernels.PIXELS
    length = max(planes_size, int(off.max()) + q_pad)
    k_pad = -(-off.shape[1] // kernels.GRAD_TAPS) * kernels.GRAD_TAPS
    grad_off = np.repeat(off[:, :1], k_pad, axis=1)
    grad_off[:, :off.shape[1]] = off
    off.setflags(write=False)
    grad_off.setflags(write=False)
    return Layout(pitch, off, length, f_pad, q_pad, grad_off)


ROW_FIRST_FLOATS = 8192   # taps go filter row first, skipping padding rows, for packed
#                            inputs up to 32 KB (L1: 48 KB): LeNet conv2's dx 0.52 -> 0.36 ms;
#                            larger ones keep channel first: row first re-reads every plane
#                            once per filter row from L2 (C512 7x7 forward 10.5 -> 14.0 ms,
#                            C256 14x14 21.1 -> 23.4)
ROW_FIRST_SKIPPED = 0.1   # ... and only where that skips at least this share of the products
#                           (LeNet conv2's dx 29%; a 3x3 pad 1 layer on 32x32 2%: not worth
#                           changing its order of summation, which the training replay's
#                           seeds were chosen under, tests/functional/test_training_faithfulness.py)


@dataclass(frozen=True)
class Rows:
    """The order in which the forward kernel sums a layer's taps. Filter row first (small
    packed inputs), the taps of the filter rows that reach real inputs are one contiguous
    run for any block of outputs, so rows of padding are skipped, not multiplied
    (direct_kernels._tap_spans); channel first (the Layout's order), one run of all taps.

    Attributes:
        off: (G, K) the Layout's offsets, reordered (KH, C/G, KW) per group when
            ``row_first``.
        row_first: whether taps are ordered filter row first.
        taps: taps per run (C/G * KW row first, else K).
        lo, hi: the output rows [lo[i], hi[i]] for which run i reads real inputs (empty
            when hi < lo).
    """

    off: np.ndarray
    row_first: bool
    taps: int
    lo: np.ndarray
    hi: np.ndarray


def _rows(lay, shape, out_rows, lo, hi) -> Rows:
    """The Rows of Layout ``lay`` whose taps are ``shape`` = (C/G, KH, KW), filter row i
    reading real inputs for output rows [lo[i], hi[i]] of ``out_rows``."""
    cg, kh, kw = shape
    off = lay.off
    kept = sum(max(0, min(h, out_rows - 1) - max(l_, 0) + 1) for l_, h in zip(lo, hi))
    if lay.length > ROW_FIRST_FLOATS or kept > (1 - ROW_FIRST_SKIPPED) * kh * out_rows:
        lo, hi, row_first = [min(lo)], [max(hi)], False
    else:
        off = np.ascontiguousarray(off.reshape(off.shape[0], cg, kh, kw).transpose(
            0, 2, 1, 3)).reshape(off.shape[0], -1)
        off.setflags(write=False)
        row_first = True
    lo, hi = np.array(lo, np.int64), np.array(hi, np.int64)
    lo.setflags(write=False)
    hi.setflags(write=False)
    return Rows(off, row_first, cg * kw if row_first else cg * kh * kw, lo, hi)


@functools.lru_cache(maxsize=1024)
def forward_rows(x_shape, w_shape, stride, padding, dilation, groups, out_size) -> Rows:
    """The :class:`Rows` of a convolution's forward (cached with its layout)."""
    lay = layout(x_shape, w_shape, stride, padding, dilation, groups, out_size)
    h, (_, cg, kh, kw), sh, ph, dh = x_shape[2], w_shape, stride[0], padding[0], dilation[0]
    # output row oh reads input row oh*sh + i*dh - ph of filter row i: real in [0, h)
    lo = [-((i * dh - ph) // sh) for i in range(kh)]
    hi = [(h - 1 + ph - i * dh) // sh for i in range(kh)]
    return _rows(lay, (cg, kh, kw), out_size[0], lo, hi)


def _phase_axis(length, out_len, k, s, p, d, r):
    """One axis of dx's phase ``r`` (inputs r, r + s, ...): (taps, their offsets e into
    dout: input r + s*t reads dout[t + e], zero padding before, pitch, outputs)."""
    count = len(range(r, length, s))
    taps = [i for i in range(k) if (r + p - i * d) % s == 0]
    if not count or not taps:
        return taps, [], 0, 0, count
    e = [(r + p - i * d) // s for i in taps]
    pad = max(0, -min(e))
    return taps, e, pad, max(out_len, count - 1 + max(e) + 1) + pad, count


@functools.lru_cache(maxsize=1024)
def phase_layout(dout_shape, w_shape, x_size, stride, padding, dilation, groups, phase):
    """dx's phase ``phase`` = (ry, rx) (inputs ry::sh, rx::sw) as a stride-1 correlation of
    dout, zero-padded, with the filter taps that land there: (Layout, taps along H,
    taps along W, padding, Rows) or None when no tap lands there (those inputs get no
    gradient)."""
    f, ho, wo = dout_shape[1:]
    _, cg, kh, kw = w_shape
    rows = _phase_axis(x_size[0], ho, kh, stride[0], padding[0], dilation[0], phase[0])
    cols = _phase_axis(x_size[1], wo, kw, stride[1], padding[1], dilation[1], phase[1])
    (taps_i, e_i, pad_h, hq, count_h), (taps_j, e_j, pad_w, wq, _) = rows, cols
    if not e_i or not e_j:
        return None
    plane = hq * wq
    chans = np.arange(f).reshape(groups, f // groups, 1, 1)
    off = (chans * plane + (np.array(e_i).reshape(1, 1, -1, 1) + pad_h) * wq
           + np.array(e_j).reshape(1, 1, 1, -1) + pad_w).reshape(groups, -1)
    lay = _finish(off, (hq, wq), f * plane, cg, count_h)
    # phase row t reads dout row t + e of its tap row: real in [0, ho)
    rows = _rows(lay, (f // groups, len(e_i), len(e_j)), count_h, [-e for e in e_i],
                 [ho - 1 - e for e in e_i])
    return lay, tuple(taps_i), tuple(taps_j), (pad_h, pad_w), rows


GRAD_TILE_BYTES = 256 * 1024   # dw: output gradients of one tile of outputs (all filters);
#                                 128 KB / 256 KB / 2 MB: ResNet stem 33 / 29 / 38 ms,
#                                 VGG conv1_2 111 / 94 / 120 ms (one thread, loaded machine)
GRAD_FLUSH = 8      # samples summed in float32 lanes between float64 flushes (dw)


def weight_grad(x, dout, w_shape, stride, padding, dilation, groups):
    """dw (F, C/G, KH, KW) float32 of the correlation of x giving dout: per sample, the
    output gradient times the packed input in registers, summed over samples in float64
    (every GRAD_FLUSH samples; within them in float32, as im2col's products sum), each half
    of the batch on its own and the two halves added in one order: the same bits on one
    thread or two."""
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
    # the batch is always summed as two halves added in one order, on one thread or two, so
    # the bits do not depend on the split (a resumed run repeats the first exactly whatever
    # threads it gets): the pass splits as the forwards do, from SPLIT_MIN_AWAKE while a
    # block thread is awake (LeNet's 1->6 5x5 dw, 7.5M multiply-adds: section 61)
    parts = min(2, n)
    count = min(_split_count(cg * kh * kw, dout.size), parts)
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    q_tile = max(16, GRAD_TILE_BYTES // (4 * f_pad) // 16 * 16)
    args = (tuple(padding), tuple(stride), lay.pitch, GRAD_FLUSH, q_tile,
            not intrinsics.wide_vectors())

    def work(i):
        x_in = block_threads.scratch("direct_in", lay.length)
        d_in = block_threads.scratch("direct_dout", groups * f_pad * lay.q_pad).reshape(
            groups, f_pad, lay.q_pad)
        part = block_threads.scratch("direct_part", groups * f_pad * k_pad * 16).reshape(
            groups, f_pad, k_pad, 16)
        total = np.zeros((groups, f_pad, k_pad), np.float64)
        kernels.weight_grad_samples(x, dout, bounds[i], bounds[i + 1], off, x_in, d_in, part,
                                    total, *args, block_threads.ENTERED)
        return total

    if parts == 0:                                       # an empty batch
        return np.zeros(w_shape, np.float32)
    totals = (block_threads.run(work, parts, entered=True) if count > 1
              else [work(i) for i in range(parts)])    # in part order: the same bits
    total = totals[0] if parts == 1 else totals[0] + totals[1]
    dw = total[:, :fg, :cg * kh * kw].astype(np.float32)
    return dw.reshape(f, cg, kh, kw)


def pack_filters(w: np.ndarray, groups: int, f_pad: int, row_first: bool) -> np.ndarray:
    """(G, Fpad / FILTERS, K, FILTERS) float32 of filters w (F, C/G, KH, KW): each group's
    filters, zero-padded to ``f_pad``, in blocks of one register block's filters, tap by
    tap (contiguous reads), taps in the order of :class:`Rows` (``row_first``: (KH, C/G,
    KW), else (C/G, KH, KW))."""
    f = w.shape[0]
    fg = f // groups
    wg = (w.transpose(0, 2, 1, 3) if row_first else w).reshape(groups, fg, -1)
    wp = np.zeros((groups, f_pad, wg.shape[2]), np.float32)
    wp[:, :fg] = wg
    packed = np.ascontiguousarray(wp.reshape(groups, f_pad // kernels.FILTERS,
                                             kernels.FILTERS, -1).transpose(0, 1, 3, 2))
    # read-only, as the weight cache keeps it for inference: numba compiles one kernel per
    # array type, and a writable training copy cost a second compile of forward_samples at
    # a network's first evaluation (3.7 s of a fresh install's first LeNet run)
    packed.flags.writeable = False
    return packed


def forward(x, w, bias, stride, padding, dilation, groups, out_size, relu=False, scale=None,
            filters_cached=False, mask=None):
    """(N, F, Ho, Wo) float32 correlation of x with w, times ``scale`` (None: 1) plus
    ``bias`` (None: none) per filter, rectified when ``relu``; any stride, padding,
    dilation and groups. ``mask`` (with ``relu``: a C-contiguous bool array of the output's
    shape) gets out > 0 as each value is stored (training's ReLU gate without a pass over
    the output). ``filters_cached`` (inference): the packed filters are kept while
    ``w`` is unchanged, checked bit for bit (functional.weight_cache), as Winograd's
    transform is: packing 128x64x3x3 cost 72 us a call, the check ~15."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    f = w.shape[0]
    lay = layout(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups), tuple(out_size))
    rows = forward_rows(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding),
                        tuple(dilation), int(groups), tuple(out_size))
    if filters_cached and w.dtype == np.float32:
        wp = weight_cache.derived((w,), ("direct", groups, lay.f_pad, rows.row_first),
                                  lambda: pack_filters(w, groups, lay.f_pad, rows.row_first))
    else:
        wp = pack_filters(np.asarray(w, dtype=np.float32), groups, lay.f_pad, rows.row_first)
    empty = np.zeros(0, np.float32)
    b = empty if bias is None else np.ascontiguousarray(bias, np.float32)
    s = empty if scale is None else np.ascontiguousarray(scale, np.float32)
    out = np.empty((n, f, *out_size), dtype=np.float32)
    mask = epilogue.gate("direct.forward", mask, out.shape, relu)
    _run(x, wp, lay, rows, out, s, b, relu, tuple(padding), tuple(stride),
         _NO_MASK if mask is None else mask)
    return out


def input_grad(dout, w, x_shape, stride, padding, dilation, groups):
    """dx (N, C, H, W) float32 of the correlation of x with w (any stride): for each of the
    stride x stride phases of x, a stride-1 correlation of dout with the taps that land on
    that phase (the transposed convolution, written into dx[:, :, ry::sh, rx::sw])."""
    dout = np.ascontiguousarray(dout, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    f, cg = w.shape[:2]
    fg = f // groups
    dx = np.empty(x_shape, dtype=np.float32)
    empty = np.zeros(0, np.float32)
    for ry in range(stride[0]):
        for rx in range(stride[1]):
            target = dx[:, :, ry::stride[0], rx::stride[1]]
            found = phase_layout(tuple(dout.shape), tuple(w.shape), tuple(x_shape[2:]),
                                 tuple(stride), tuple(padding), tuple(dilation), int(groups),
                                 (ry, rx))
            if found is None:
                target[...] = 0.0
                continue
            lay, taps_i, taps_j, pads, rows = found
            # the phase's filters: dx channel c of group g reads tap (f, i, j) of its group
            sub = w[:, :, list(taps_i)][:, :, :, list(taps_j)]
            sub = sub.reshape(groups, fg, cg, len(taps_i), len(taps_j)).transpose(0, 2, 1, 3, 4)
            wp = pack_filters(sub.reshape(groups * cg, fg, len(taps_i), len(taps_j)), groups,
                              lay.f_pad, rows.row_first)
            _run(dout, wp, lay, rows, target, empty, empty, False, pads, (1, 1), _NO_MASK)
    return dx


@functools.lru_cache(maxsize=1024)
def _work_items(n, blocks, threads, f_pad):
    """((first sample, end sample, first filter block, end filter block) per thread item,
    outputs per tile) of ``_run`` (cached: at batch 1 working them out per call cost as much
    as a small layer's sums)."""
    parts = max(1, min(blocks, threads // max(n, 1)))
    samples = max(1, min(threads, n))
    items = tuple((n * i // samples, n * (i + 1) // samples,
                   blocks * j // parts, blocks * (j + 1) // parts)
                  for i in range(samples) for j in range(parts))
    q_tile = max(kernels.PIXELS, TILE_BYTES // (4 * f_pad) // kernels.PIXELS * kernels.PIXELS)
    return items, q_tile


def _run(x, wp, lay, rows, out, s, b, relu, padding, stride, mask):
    """forward_samples over the library's threads: samples shared out among them; with fewer
    samples than threads (batch 1), each sample's filter blocks too (each thread packs the
    sample itself)."""
    n = x.shape[0]
    # a pass too small to pay for a hand-off stays on the calling thread (split_count:
    # SPLIT_MIN, or SPLIT_MIN_AWAKE while a block thread spins; LeNet conv2's passes,
    # benchmarks/README.md, 58), as does a short one of few taps (SPLIT_MIN_TAPS)
    threads = _split_count(rows.off.shape[1], out.size)
    blocks = lay.f_pad // kernels.FILTERS
    items, q_tile = _work_items(n, blocks, threads, lay.f_pad)
    args = (padding, stride, lay.pitch, K_CHUNK, q_tile, rows.taps, rows.lo, rows.hi,
            not intrinsics.wide_vectors())

    def work(i):
        x_in = block_threads.scratch("direct_in", lay.length)
        prod = block_threads.scratch("direct_prod", lay.f_pad * lay.q_pad).reshape(
            lay.f_pad, lay.q_pad)
        kernels.forward_samples(x, *items[i], wp, rows.off, x_in, prod, out, s, b, bool(relu),
                                mask, *args, block_threads.ENTERED)

    block_threads.run(work, len(items), entered=True)
