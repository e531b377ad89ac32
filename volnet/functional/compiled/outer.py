"""Outer-product float32 convolution for any stride, padding, dilation and groups: filters in
the vector lanes, output positions broadcast, weights read in place (the kernels and why:
``outer_kernels.py``).

Where it runs (chosen by ``volnet.functional.conv_choice``): inference layers whose maps
are too small for Winograd's tiles or the direct kernel's rows of 32 outputs (7x7, 14x14,
stride 2, batch 1 up to 28x28, the stems); in training, forwards, stride-1 dx and dw in place of the direct kernel and
im2col (:func:`weight_grad`: the same register block, taps and positions swapped), measured
in benchmarks/README.md (ninth round, 51-56).

The work is shared out among the library's threads (``block_threads.run``) by samples,
then by blocks of 64 filters, then by tiles of positions, so that batch 1 keeps both cores
busy; each thread packs its sample itself (the zero-padded planes; none without padding)
into its own scratch. Small maps of several samples share one tile (``Layout.group``), so
that each transposed chunk of the weights serves more than one map's few positions.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from volnet.errors import ShapeError
from volnet.functional.compiled import epilogue, intrinsics
from volnet.functional.compiled import outer_kernels as kernels
from volnet.runtime import block_threads

_NO_MASK = np.zeros((0, 0, 0), np.bool_)   # forward_items' "no ReLU gate to write" (and
#                                            weight_grad_items' "none to read")
_NO_GATED = np.zeros((0, 0, 0), np.float32)  # weight_grad_items' "no gated dout to keep"
K_CHUNK = 128        # taps per transposed chunk of the weights (32 KB: L1)
TILE = 256 * kernels.POSITIONS  # positions per tile at most: their partial sums and
#                                 transposed copy (384 KB each) stay in L2 while every
#                                 filter block runs over them ...
TILE_INPUT_BYTES = 1 << 20      # ... and the inputs they read (C x sh x sw floats a
#                                 position) too: else every filter block re-reads them from
#                                 L3 (ResNet-50's 256->512 1x1 s2 on 56x56, 8 filter blocks)
P_CHUNK = 128                   # positions per transposed chunk of dout in weight_grad (32
#                                 KB: L1; 256 and 512 were no faster, benchmarks/README 52)


@dataclass(frozen=True)
class Layout:
    """Where one convolution's taps and outputs are in its (padded) input.

    Attributes:
        pitch: (Hp, Wp), the size of one (zero-padded) input plane.
        packed: whether the input is padded into a scratch first (any padding).
        off: (C/G * KH * KW,) offset of tap (c, i, j) from a position's first input.
        inb: (Ho * Wo rounded up to POSITIONS,) offset of each output position's first
            input (the tail repeats the last position).
        items: ((n0, n1, fb0, fb1, t0, t1), ...) the threads' shares of the work.
        tile: positions per tile (a multiple of POSITIONS).
        group: samples whose whole maps share one tile, one after another (1: a tile
            holds positions of one sample).
    """

    pitch: tuple[int, int]
    packed: bool
    off: np.ndarray
    inb: np.ndarray
    items: tuple
    tile: int
    group: int


@functools.lru_cache(maxsize=1024)
def layout(x_shape, w_shape, stride, padding, dilation, groups, out_size, threads) -> Layout:
    """The :class:`Layout` of a convolution (cached: made once per layer shape).

    Raises:
        ShapeError: for operands no convolution has (``_check_shapes``): the kernels
            index with these offsets unchecked.
    """
    n, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    (sh, sw), (ph, pw), (dh, dw), (ho, wo) = stride, padding, dilation, out_size
    hp, wp = h + 2 * ph, w + 2 * pw
    _check_shapes(x_shape, w_shape, stride, padding, dilation, groups, out_size)
    taps = (np.arange(cg)[:, None, None] * (hp * wp) + np.arange(kh)[None, :, None] * dh * wp
            + np.arange(kw)[None, None, :] * dw)
    positions = ho * wo
    rounded = -(-positions // kernels.POSITIONS) * kernels.POSITIONS
    p = np.minimum(np.arange(rounded), positions - 1)
    inb = (p // wo) * sh * wp + (p % wo) * sw
    off, inb = taps.reshape(-1).astype(np.int64), inb.astype(np.int64)
    off.setflags(write=False)
    inb.setflags(write=False)
    tile = _tile_positions(c, stride)
    items = _items(n, _block_vectors(f, groups), rounded, threads)
    # whole maps of several samples in one tile where a map is small: every transposed
    # chunk of the weights then serves them all, instead of the 54 positions of one 7x7 map
    group = max(1, min(max(i[1] - i[0] for i in items), tile // positions))
    tile = (-(-group * positions // kernels.POSITIONS) * kernels.POSITIONS if group > 1
            else min(tile, rounded))
    return Layout((hp, wp), ph > 0 or pw > 0, off, inb, items, tile, group)


def _check_shapes(x_shape, w_shape, stride, padding, dilation, groups, out_size):
    """Raise ShapeError unless every read the kernels make stays in its array: each group's
    taps (C/G channels) inside the input's channels, and the last output position's last
    tap, ``(Ho - 1) * S + (KH - 1) * D``, inside the padded plane (row and column), so
    that ``inb[p] + off[k] < C/G * Hp * Wp`` for every position p and tap k."""
    _, c, h, w = x_shape
    f, cg, kh, kw = w_shape
    if groups < 1 or c != cg * groups or f % groups or min(f, cg, kh, kw) < 1:
        raise ShapeError(f"outer.forward: filters {tuple(w_shape)} in {groups} groups do not "
                         f"fit an input of {c} channels; pass weights (F, C / groups, KH, KW) "
                         f"with F a multiple of groups")
    for axis, size, k, s, p, d, o in zip("HW", (h, w), (kh, kw), stride, padding, dilation,
                                         out_size):
        if s < 1 or d < 1 or p < 0 or o < 1 or (o - 1) * s + (k - 1) * d >= size + 2 * p:
            raise ShapeError(f"outer.forward: output {axis} {o} with kernel {k}, stride {s}, "
                             f"padding {p}, dilation {d} reads past the padded input ({size} "
                             f"+ 2*{p}); pass the output size conv_output_size gives")


def _block_vectors(f, groups) -> tuple:
    """Each filter block's count of 16-filter vectors (what its products cost): blocks of
    64 filters per group, the last one of a group shorter."""
    fg = f // groups
    widths = [min(kernels.FILTERS, fg - b) for b in range(0, fg, kernels.FILTERS)] * groups
    return tuple(-(-width // kernels.LANES) for width in widths)


def _tile_positions(c, stride) -> int:
    """Positions per tile at most (a multiple of POSITIONS): TILE, or fewer where their
    inputs (C x sh x sw floats a position) would pass TILE_INPUT_BYTES."""
    per_position = 4 * c * stride[0] * stride[1]
    return max(8, min(TILE, TILE_INPUT_BYTES // per_position) // kernels.POSITIONS) * (
        kernels.POSITIONS)


def _block_runs(vectors, parts) -> list:
    """The filter blocks in at most ``parts`` contiguous runs [a, b) of about equal cost."""
    total = sum(vectors)
    ends = np.cumsum(vectors)
    cuts = [0] + [int(np.abs(ends - total * j / parts).argmin()) + 1
                  for j in range(1, parts)] + [len(vectors)]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def _items(n, vectors, rounded, threads) -> tuple:
    """The threads' shares: samples first; with fewer samples than threads, each sample's
    filter blocks (``vectors``: each block's count of 16-filter vectors, what its products
    cost) in contiguous runs of about equal cost, or its positions in tiles (multiples of
    POSITIONS; every thread then transposes all the weights), whichever leaves the largest
    share smaller (three blocks on two threads: 2:1 by blocks, even by positions)."""
    samples = max(1, min(threads, n))
    parts = max(1, threads // samples)
    blocks = len(vectors)
    runs = [(0, blocks)]
    tiles = [(0, rounded)]
    if parts > 1:
        total = sum(vectors)
        by_blocks = _block_runs(vectors, parts)
        largest = max(sum(vectors[a:b]) for a, b in by_blocks)
        per_tile = -(-rounded // kernels.POSITIONS // parts) * kernels.POSITIONS
        if largest * rounded <= total * per_tile:
            runs = by_blocks
        else:
            tiles = [(t, min(rounded, t + per_tile)) for t in range(0, rounded, per_tile)]
    return tuple((n * i // samples, n * (i + 1) // samples, a, b, t0, t1)
                 for i in range(samples) for a, b in runs for t0, t1 in tiles)


def forward(x, w, bias, stride, padding, dilation, groups, out_size, relu=False, scale=None,
            residual=None, mask=None):
    """(N, F, Ho, Wo) float32 correlation of x with w, times ``scale`` (None: 1) plus
    ``bias`` (None: none) per filter, plus ``residual`` (None: none; the output's shape),
    rectified when ``relu``; any stride, padding, dilation and groups. Any dtype and
    layout in; float32 out, computed from float32 copies. ``mask`` (with ``relu`` and no
    residual: a C-contiguous bool array of the output's shape) gets out > 0 as each value
    is stored (training's ReLU gate without a pass over the output).

    Raises:
        ShapeError: for operands of the wrong shapes (the kernels index unchecked).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    w2 = np.ascontiguousarray(w, dtype=np.float32).reshape(w.shape[0], -1)
    n, c = x.shape[:2]
    f = w.shape[0]
    # only a product worth a hand-off is split (split_count: SPLIT_MIN, or SPLIT_MIN_AWAKE
    # while a block thread spins: each output is one sum, the same bits however split)
    threads = block_threads.split_count(n * w2.size * out_size[0] * out_size[1],
                                        same_bits=True)
    lay = layout(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups), tuple(out_size), threads)
    out = np.empty((n, f, *out_size), dtype=np.float32)
    has_res = residual is not None
    s, b, res = epilogue.operands("outer.forward", out, bias, scale, residual)
    mask = epilogue.gate("outer.forward", mask, out.shape, relu, residual)
    gate = (_NO_MASK if mask is None       # reshape's -1 fails at N = 0
            else mask.reshape(n, f, out_size[0] * out_size[1]))
    plane = lay.pitch[0] * lay.pitch[1]
    tile = lay.tile
    k_chunk = min(K_CHUNK, w2.shape[1])
    pitch, pads = lay.pitch, tuple(padding)
    most = kernels.block_vectors(intrinsics.wide_vectors())

    def work(i):
        x_in = block_threads.scratch("outer_in", lay.group * c * plane if lay.packed else 1)
        prod = block_threads.scratch("outer_prod", tile * kernels.FILTERS)
        buf = block_threads.scratch("outer_w", k_chunk * kernels.FILTERS)
        tmp = block_threads.scratch("outer_t", tile * kernels.FILTERS)
        inb_g = block_threads.scratch("outer_inb", max(tile, lay.inb.size), np.int64)
        kernels.forward_items(x, w2, int(groups), *lay.items[i], tile, lay.group, lay.off,
                              lay.inb, inb_g, pads, pitch, lay.packed, x_in, prod, buf, tmp,
                              out, s, b, has_res, res, bool(relu), gate, k_chunk, most,
                              block_threads.ENTERED)

    block_threads.run(work, len(lay.items), entered=True)
    return out


def _taps_rounded(off: np.ndarray) -> np.ndarray:
    """The taps' offsets rounded up to whole register blocks of POSITIONS (the tail repeats
    the last tap; its gradient rows are computed and dropped)."""
    rounded = -(-off.size // kernels.POSITIONS) * kernels.POSITIONS
    return np.concatenate([off, np.full(rounded - off.size, off[-1], np.int64)])


def weight_grad(x, dout, w_shape, stride, padding, dilation, groups):
    """dw (F, C/G, KH, KW) float32 of a convolution of x with ``dout`` (N, F, Ho, Wo) its
    output's gradient: the forward's register block with taps and positions swapped (see
    ``outer_kernels.weight_grad_items``); any stride, padding, dilation and groups.
    See :func:`gated_weight_grad` for a convolution with a fused ReLU.

    The same bits on any number of threads (a resumed training run repeats the first one
    exactly whatever thread count it gets): with two or more filter blocks the threads take
    runs of whole blocks, each block summed over every sample in one order; with one block,
    the batch is always summed as two halves (on one thread or two) added in one order.
    The samples sharing a tile (as the forward's small maps) are chosen from the shapes.

    Raises:
        ShapeError: for operands of the wrong shapes (the kernels index unchecked).
    """
    return _weight_grad(x, dout, w_shape, stride, padding, dilation, groups, None, False)[0]


def gated_weight_grad(x, dout, gate, w_shape, stride, padding, dilation, groups,
                      keep_gated=True):
    """(dw, db, gated) of a convolution whose forward fused a ReLU (``gate``: its training
    mask, out > 0, (N, F, Ho, Wo) bool) given ``dout`` the gradient of its rectified
    output: gated = dout where the gate is set, else 0 (the ReLU's backward: the gradient
    of the convolution's own output, dx's input; None unless ``keep_gated``), db (F,)
    float32 its sum over every axis but 1 (summed in float64), and dw as
    :func:`weight_grad` of gated, the same bits.

    One pass over dout and the gate for all three: the kernel gates each chunk of dout as
    it loads it for dw (a separate ReLU pass cost a read and a write of dout, memory-bound:
    benchmarks/README.md, section 62).

    Raises:
        ShapeError: for operands of the wrong shapes (the kernels index unchecked).
    """
    if np.shape(gate) != np.shape(dout) or np.asarray(gate).dtype != np.bool_:
        raise ShapeError(f"outer.gated_weight_grad: the gate has shape {np.shape(gate)} and "
                         f"dtype {np.asarray(gate).dtype}, it needs dout's shape "
                         f"{np.shape(dout)} and bool; pass the forward's ReLU mask")
    return _weight_grad(x, dout, w_shape, stride, padding, dilation, groups,
                        np.ascontiguousarray(gate), keep_gated)


def _weight_grad(x, dout, w_shape, stride, padding, dilation, groups, gate, keep_gated):
    """(dw, db or None, gated or None): :func:`weight_grad`, gated when ``gate`` is not
    None (:func:`gated_weight_grad`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, c = x.shape[:2]
    f = w_shape[0]
    if np.ndim(dout) != 4 or tuple(dout.shape[:2]) != (n, f):
        raise ShapeError(f"outer.weight_grad: dout has shape {np.shape(dout)}, the layer's "
                         f"output gradient needs ({n}, {f}, Ho, Wo); pass the gradient of "
                         f"this convolution's output")
    keep_gated = gate is not None and keep_gated
    if n == 0:                  # an empty batch: no gradient (the kernels need a sample)
        return (np.zeros(w_shape, np.float32),
                None if gate is None else np.zeros(f, np.float32),
                np.zeros(dout.shape, np.float32) if keep_gated else None)
    d = np.ascontiguousarray(dout, dtype=np.float32).reshape(n, f, -1)
    gated = np.empty_like(d) if keep_gated else _NO_GATED
    out_size = dout.shape[2:]
    gate3 = _NO_MASK if gate is None else gate.reshape(n, f, -1)
    lay = layout(tuple(x.shape), tuple(w_shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups), tuple(out_size), 1)
    off = _taps_rounded(lay.off)
    vectors = _block_vectors(f, groups)
    blocks = len(vectors)
    positions = d.shape[2]
    most = kernels.block_vectors(intrinsics.wide_vectors())
    # the same bits however split (above), so the pass splits as the forwards do
    threads = block_threads.split_count(d.size * lay.off.size, same_bits=True)
    if blocks > 1:
        parts = [(0, n, a, b) for a, b in _block_runs(vectors, min(threads, blocks))]
    else:
        parts = [(s, e, 0, 1) for s, e in ((0, n // 2), (n // 2, n)) if e > s]
    group = max(1, min(max(e - s for s, e, _, _ in parts),
                       _tile_positions(c, stride) // positions))
    plane = lay.pitch[0] * lay.pitch[1]
    p_chunk = min(P_CHUNK, group * positions)

    k = lay.off.size
    fg, per_group = f // groups, blocks // groups
    # with two or more blocks each thread's blocks are its own: it sums them in its scratch
    # and moves them into dw itself (serial passes summing the parts into a fresh array,
    # then transposing it, took ~5 ms of 512x512 7x7's dw: benchmarks/README.md, 62)
    bias_acc = np.zeros((blocks, kernels.FILTERS))
    dw = np.empty((f, k), np.float32)

    def to_dw(acc, a, b):
        """Blocks [a, b) (acc's rows: taps x 64 filters each, the last of a group short)
        into their filters' rows of dw."""
        for fb in range(a, b):
            g, j = divmod(fb, per_group)
            f0, nf = g * fg + j * kernels.FILTERS, min(kernels.FILTERS, fg - j * kernels.FILTERS)
            dw[f0:f0 + nf] = acc[fb - a].reshape(off.size, kernels.FILTERS)[:k, :nf].T

    def work(i):
        x_in = block_threads.scratch("outer_in", group * c * plane if lay.packed else 1)
        buf = block_threads.scratch("outer_w", p_chunk * kernels.FILTERS)
        inb_g = block_threads.scratch("outer_inb", group * positions, np.int64)
        chunk = block_threads.scratch("outer_gated", p_chunk * (
            kernels.FILTERS if gate is not None else 1)).reshape(-1, p_chunk)
        _, _, a, b = parts[i]
        # the thread's sums start from zero in its own reused scratch (a fresh array of
        # zeros took its page faults again on every call)
        mine = block_threads.scratch("outer_dw", (b - a) * off.size * kernels.FILTERS)
        mine = mine.reshape(b - a, -1)
        mine.fill(0)
        bias_mine = np.zeros((b - a, kernels.FILTERS))
        kernels.weight_grad_items(x, d, int(groups), *parts[i], group, off,
                                  lay.inb[:positions], inb_g, tuple(padding), lay.pitch,
                                  lay.packed, x_in, buf, mine, p_chunk, gate3, gated, chunk,
                                  bias_mine, most)
        if blocks > 1:          # the thread's own blocks: straight into dw
            to_dw(mine, a, b)
            return None, bias_mine
        return mine.copy(), bias_mine     # a half of the batch: added below

    if threads > 1:
        # not entered=True: each block's first step outside the GIL is zeroing its sums
        results = block_threads.run(work, len(parts))
    else:       # one thread: the parts in turn (run would hand them to block threads)
        results = [work(i) for i in range(len(parts))]
    for (_, _, a, b), (_, bias_part) in zip(parts, results):   # in part order: the same bits
        bias_acc[a:b] += bias_part
    if blocks == 1:
        acc = np.zeros((1, off.size * kernels.FILTERS), np.float32)
        for part, _ in results:
            acc += part
        to_dw(acc, 0, 1)
    dw = dw.reshape(w_shape)
    if gate is None:
        return dw, None, None
    # (blocks, 64) -> (F,): each group's blocks, the last one short, as dw's rows
    db = bias_acc.reshape(groups, -1)[:, :f // groups].reshape(f).astype(np.float32)
    return dw, db, gated.reshape(dout.shape) if keep_gated else None
