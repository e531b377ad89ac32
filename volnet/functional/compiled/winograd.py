"""Winograd minimal filtering F(4x4, 3x3) for stride-1 3x3 convolutions (Lavin & Gray 2016).

A 3x3 correlation of a 6x6 input tile ``d`` with a filter ``g`` gives a 4x4 output tile
``Y = AT [(G g G^T) * (BT d BT^T)] AT^T``; ``*`` is element-wise over the a x a = 36
transform points. Summed over input channels, the element-wise stage becomes one matrix
product per transform point: ``M[t] = U[t] @ V[t]`` with ``U[t]`` (F, C) the transformed
filters and ``V[t]`` (C, tiles) the transformed input tiles: 36 products of 1/16 of the
output positions each, 4x fewer multiplications than direct. (F(2x2) was removed in the
sixth round: it never beat im2col by more than 10% where F(4x4) did not beat both,
benchmarks/README.md.)

The tile transforms are compiled loops (numba, ``winograd_tiles.py``); the products are
np.matmul (BLAS). The batch is cut into blocks of about ``BLOCK_TILES`` tiles, small
enough that a block's transformed tiles and products stay in the core's cache between
the transforms and the product; each of the library's threads takes every k-th block
and runs its transforms and its one-thread products itself (``block_threads.run``). A
layer with few tiles for its filters (batch 1 on 28x28 maps, 512 filters on 7x7) splits
by filters instead: the threads transform all the tiles into one shared block, each its
channels, then each multiplies its share of the filters (:func:`split_by_filters`).

Dilation ``D`` is handled by the sub-grid identity: the outputs ``o = s + D*t`` of one
residue ``s`` (per axis) only read inputs ``s + D*(t + k)``, an undilated 3x3 conv on a
sub-grid, so tiles are laid on each sub-grid and read/written with step ``D``.

Gradients: dx of a stride-1 conv is this forward on dout with flipped, transposed
filters (see conv_gemm.input_grad_as_conv), whose transform :func:`input_grad` reads
straight from the layer's filters; dw is the transposed algorithm
``dg = G^T [sum over tiles (A dY A^T) * (BT d BT^T)] G`` with one product per point.
The filter transform and dw's back-transform run in float64, the tile transforms in
float32. volnet only uses Winograd for float32 layers.
"""

from __future__ import annotations

import numpy as np

from volnet.functional.compiled import winograd_filters as filters
from volnet.functional.compiled import winograd_tiles as tiles
from volnet.errors import ShapeError
from volnet.runtime import block_threads

M, A = 4, 6        # output tile side, transform tile side
# the filter transform matrix (float64); BT and AT are written out in winograd_tiles.py
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)


BLOCK_TILES = 128   # forward: V and the products of a 64-channel block fit in L2
BLOCK_TILES_WIDE = 256   # forward with C and F >= WIDE_CHANNELS: each block re-reads all of U
WIDE_CHANNELS = 96       # (2.4 MB at 128x128), and the products run faster on more tiles
#   (one thread, 36 x (128x128)@(128xP): 8.2 us per tile at P=98, 6.9 at 256; at 64x64
#   flat to P=224, then 1.6 -> 2.1 us). Critical path, two threads, ms, 128 -> 256 tiles
#   (benchmarks/README.md, section 46): 8x128x28x28 2.87 -> 2.58, 8x96->128 28x28 2.34 ->
#   2.08, 8x192x28x28 5.09 -> 4.47, 8x128x56x56 10.44 -> 9.88, 1x128x112x112 6.21 -> 5.03;
#   level at 16x128x16x16, 16x128x32x32, 16x96x32x32, 16x256x14x14, 1x128x56x56. Not at 64
#   channels: 16x64x32x32 2.21 -> 2.63 (8x64x56x56 3.66 -> 3.38)
PLANE_PAD = 16      # floats between two points' planes: planes a multiple of 4 KB apart put
#                     the 6 rows a transform writes at once in one cache set (half the speed)
_NO_RESIDUAL = np.empty((0, 0, 0, 0), np.float32)   # the output transform's "no shortcut"
SPLIT_FILTERS_BELOW = 16   # forward: fewer tiles per thread than this: threads split filters, not
#                            tiles (a 1x128x14x14 -> 256 layer: 16 tiles; 8-wide products read
#                            all of U on each thread, 0.69 ms at 2 threads, by filters 0.60)
SPLIT_FILTERS_PER_TILE = 320   # ... and from F x C >= this x tiles: each thread then reads
#   1/threads of U (36 F C floats) and multiplies all the tiles, not all of U by its tiles.
#   Critical path from CPU times, two threads, ms (benchmarks/README.md, section 46):
#   F*C/tiles 334: 1x128x28x28 0.57 -> 0.53, 4x256x28x28 4.11 -> 4.06; 501: 1x128->192 28x28
#   0.78 -> 0.68; 2675-5350: 1x256->512 and 1x512x28x28 3.10 -> 2.43, 6.50 -> 4.80;
#   8x512x7x7 3.56 -> 2.96; but 256: 16x256x14x14 5.31 -> 5.55, 63: 1x64->192 56x56 1.30
#   -> 1.36, 21: 1x64x56x56 0.51 -> 0.63 (the transforms, not U, dominate there)
DW_BLOCK_BYTES = 16 * 2**20   # dw: V and dY per worker block; each block adds 36*F*C to dU
DW_TILES_PER_SUM = 8          # ... and at most 8 * F*C/(F+C) tiles: transforms per partial sum


def tile_starts(length: int, m: int, d: int) -> np.ndarray:
    """First output index of every m-tile along one axis, tiles laid on each of the d sub-grids."""
    starts = [s + d * t for s in range(d) for t in range(0, len(range(s, length, d)), m)]
    return np.array(starts, dtype=np.int64)


def filter_transform(w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """U (36, F, C) float32 = G g G^T for every filter, computed in float64 (into ``out``)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    f, c = w.shape[:2]
    u = np.empty((A * A, f, c), dtype=np.float32) if out is None else out
    _over_filters(lambda f0, f1: filters.filter_points(w, G, u, f0, f1), f)
    return u


def adjoint_filter_transform(w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """U (36, C, F) float32 of the flipped, transposed filters of ``w`` (F, C, 3, 3): the
    filter transform of dx as a convolution of dout (conv_gemm.flipped_transpose), made
    straight from ``w`` (into ``out``) without the flipped copy (1.6 ms for 512x512
    filters, which the transform then read again; benchmarks/README.md section 43)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    f, c = w.shape[:2]
    u = np.empty((A * A, c, f), dtype=np.float32) if out is None else out
    _over_filters(lambda c0, c1: filters.filter_points_adjoint(w, G, u, c0, c1), c)
    return u


def _filter_ranges(f: int, parts: int) -> np.ndarray:
    """Bounds of ``parts`` near-equal ranges of ``f`` filters."""
    return np.linspace(0, f, parts + 1).astype(np.int64)


def _over_filters(kernel, f: int) -> None:
    """``kernel(f0, f1)`` for near-equal ranges of the ``f`` filters (or channels), one per
    thread."""
    bounds = _filter_ranges(f, min(block_threads.workers(), f))
    block_threads.run(lambda i: kernel(bounds[i], bounds[i + 1]), len(bounds) - 1)


class _Grid:
    """Tile grid of one layer, cut into blocks of tile rows, as many blocks as a multiple of
    the threads and of equal size (a 1x64x56x56 layer: two blocks of 98 tiles, not 126 and
    70); ``blocks`` gives one worker its blocks in reusable arrays."""

    def __init__(self, n, out_size, d, block_tiles=BLOCK_TILES, threads=None):
        self.d = d
        self.rows0, self.cols0 = tile_starts(out_size[0], M, d), tile_starts(out_size[1], M, d)
        self.total = n * self.rows0.size
        count = -(-self.total // max(1, block_tiles // self.cols0.size))
        threads = block_threads.workers() if threads is None else threads
        count = min(self.total, -(-count // threads) * threads)
        self.per_block = -(-self.total // count)
        self.starts = range(0, self.total, self.per_block)

    def blocks(self, items, widths):
        """(q0, q1, buffers, tag) for every (q0, tag) in ``items`` (block starts): one flat
        buffer per width, large enough for ``planes(buffer, rows <= width, tiles)``, reused
        from block to block."""
        size = self.per_block * self.cols0.size
        bufs = [block_threads.scratch(f"winograd{i}", A * A * (width * size + PLANE_PAD))
                for i, width in enumerate(widths)]
        for q0, tag in items:
            yield q0, min(self.total, q0 + self.per_block), bufs, tag

    def tiles(self, q0, q1) -> int:
        """Tiles in the block of tile rows [q0, q1)."""
        return (q1 - q0) * self.cols0.size

    def input_points(self, x, v, q0, q1, padding):
        """V, 36 planes of (C, tiles), of one block of tile rows."""
        tiles.input_tiles4(x, v, q0, q1, self.rows0, self.cols0, self.d, *padding, 0,
                           x.shape[1], block_threads.ENTERED)


def planes(buf: np.ndarray, rows: int, tiles_: int) -> np.ndarray:
    """The kernels' layout of a block (winograd_tiles.py): 36 point planes of (rows, tiles),
    each flattened, PLANE_PAD floats apart, in the front of ``buf``."""
    return buf[:A * A * (rows * tiles_ + PLANE_PAD)].reshape(A * A, rows * tiles_ + PLANE_PAD)


def matrices(planes_: np.ndarray, rows: int) -> np.ndarray:
    """The (36, rows, tiles) view of a block's planes: one contiguous matrix per transform
    point, as BLAS takes it (a view: nothing is copied)."""
    return planes_[:, :planes_.shape[1] - PLANE_PAD].reshape(A * A, rows, -1)


def forward(x, w, bias, padding, dilation, out_size, u=None, relu=False, scale=None,
            residual=None):
    """(N, F, Ho, Wo) float32 stride-1 3x3 correlation of x with w, times ``scale`` (None:
    1) plus bias (None: no bias) per filter, plus ``residual`` (None: nothing; else an
    array of the output's shape, a residual block's shortcut), rectified when ``relu``:
    all in the output transform's store, which writes each output once (a separate pass
    for the shortcut cost a 1x64x56x56 layer 0.06 ms of its 0.58 critical path on two
    threads: benchmarks/README.md, section 46).

    ``u``: w's filter transform (:func:`filter_transform`) when the caller has it (cached
    for inference, volnet.functional.weight_cache; dx's from :func:`input_grad`); computed
    here when None (``w`` is then needed, else it may be None).
    Work items are blocks of tile rows, each thread transforming, multiplying and
    back-transforming its own; a layer with fewer blocks than threads, few tiles per
    thread or much of U per tile (:func:`split_by_filters`) is split by filters instead
    (:func:`_by_filters`).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    relu = bool(relu)
    n, c = x.shape[:2]
    f = w.shape[0] if u is None else u.shape[1]
    if u is None:   # U in this thread's scratch: 37 MB for 512x512 filters, faulted once
        u = filter_transform(w, block_threads.scratch("winograd_u", A * A * f * c).reshape(
            A * A, f, c))
    b = np.zeros(f, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    s = np.ones(f, np.float32) if scale is None else np.ascontiguousarray(scale, np.float32)
    out = np.empty((n, f, *out_size), dtype=np.float32)
    add = _NO_RESIDUAL if residual is None else np.ascontiguousarray(residual, np.float32)
    if add.size and add.shape != out.shape:
        raise ShapeError(f"winograd.forward: residual has shape {add.shape}, the output "
                         f"{out.shape}; pass the shortcut of this layer's output shape")
    wide = min(c, f) >= WIDE_CHANNELS
    grid = _Grid(n, out_size, dilation[0], BLOCK_TILES_WIDE if wide else BLOCK_TILES)
    workers = block_threads.workers()
    if split_by_filters(grid.total * grid.cols0.size, c, f, len(grid.starts), workers):
        _by_filters(x, u, out, s, b, add, relu, tuple(padding), dilation[0], workers)
        return out
    rows0, cols0, d = grid.rows0, grid.cols0, grid.d
    count = min(workers, len(grid.starts))

    def work(worker):
        for q0, q1, (vbuf, pbuf), _ in grid.blocks(
                [(q0, 0) for q0 in grid.starts[worker::count]], (c, f)):
            p = grid.tiles(q0, q1)
            v, prod = planes(vbuf, c, p), planes(pbuf, f, p)
            grid.input_points(x, v, q0, q1, tuple(padding))
            np.matmul(u, matrices(v, c), out=matrices(prod, f))
            tiles.output_tiles4(prod, f, out, s, b, add, relu, q0, q1, rows0, cols0, d, 0)

    block_threads.run(work, count, entered=True)
    return out


def split_by_filters(tiles_: int, c: int, f: int, blocks: int, threads: int) -> bool:
    """Whether the forward of ``tiles_`` output tiles (``blocks`` blocks of tile rows)
    splits its filters over ``threads`` threads rather than its tiles: with fewer blocks
    than threads, fewer than SPLIT_FILTERS_BELOW tiles per thread, or F x C of at least
    SPLIT_FILTERS_PER_TILE per tile (each thread then reads its share of U, not all)."""
    return threads > 1 and f > 1 and (blocks < threads or tiles_ < SPLIT_FILTERS_BELOW * threads
                                      or f * c >= SPLIT_FILTERS_PER_TILE * tiles_)


def _by_filters(x, u, out, scale, bias, residual, relu, padding, d, workers):
    """The forward split by filters: the threads transform the whole batch's tiles
    together into one shared V, each its share of the channels; then each multiplies its
    filters' share of U by all of V and back-transforms its filters' outputs (with the
    epilogue). Two hand-offs, every tile transformed once, each thread reading 1/threads
    of U and the products as wide as all the tiles."""
    n, c = x.shape[:2]
    f = u.shape[1]
    grid = _Grid(n, out.shape[2:], d, block_tiles=np.iinfo(np.int64).max, threads=1)  # 1 block
    rows0, cols0, total = grid.rows0, grid.cols0, grid.total
    p = grid.tiles(0, total)
    v = planes(block_threads.scratch("winograd_shared", A * A * (c * p + PLANE_PAD)), c, p)
    chans = _filter_ranges(c, min(workers, c))
    block_threads.run(lambda i: tiles.input_tiles4(x, v, 0, total, rows0, cols0, d, *padding,
                                                   chans[i], chans[i + 1],
                                                   block_threads.ENTERED),
                      len(chans) - 1, entered=True)
    bounds = _filter_ranges(f, min(workers, f))

    def products(i):
        f0, f1 = int(bounds[i]), int(bounds[i + 1])
        width = f1 - f0
        prod = planes(block_threads.scratch("winograd1", A * A * (width * p + PLANE_PAD)),
                      width, p)
        np.matmul(u[:, f0:f1], matrices(v, c), out=matrices(prod, width))
        tiles.output_tiles4(prod, width, out, scale, bias, residual, relu, 0, total, rows0,
                            cols0, d, f0)

    block_threads.run(products, len(bounds) - 1)


def input_grad(dout, w, padding, dilation, out_size):
    """dx (N, C, H, W) float32 of the stride-1 3x3 correlation with ``w`` (F, C, 3, 3):
    :func:`forward` of ``dout`` padded by ``padding`` (the adjoint's, 2*dilation - the
    layer's) with the flipped, transposed filters, whose transform
    (:func:`adjoint_filter_transform`) goes into this thread's scratch."""
    f, c = w.shape[:2]
    u = adjoint_filter_transform(w, block_threads.scratch("winograd_u", A * A * f * c).reshape(
        A * A, c, f))
    return forward(dout, None, None, padding, dilation, out_size, u)


def weight_grad(x, dout, padding, dilation):
    """dw (F, C, 3, 3) float32 of the stride-1 3x3 correlation, by the transposed algorithm."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    dout = np.ascontiguousarray(dout, dtype=np.float32)
    n, c = x.shape[:2]
    f = dout.shape[1]
    # few channels: blocks whose transformed tiles stay in L2 (a 32->32 layer: 128 tiles,
    # not the 1820 of 16 MB: 21 -> 17 ms); many: few blocks, as each adds 36*F*C partial
    # sums (benchmarks/README.md section 31)
    tiles_per_block = max(BLOCK_TILES, min(DW_BLOCK_BYTES // (4 * A * A * (c + f)),
                                           DW_TILES_PER_SUM * c * f // (c + f)))
    grid = _Grid(n, dout.shape[2:], dilation[0], tiles_per_block)
    rows0, cols0, d = grid.rows0, grid.cols0, grid.d

    count = min(block_threads.workers(), len(grid.starts))
    if count == 0:                                           # an empty batch
        return np.zeros((f, c, 3, 3), dtype=np.float32)
    # one partial sum per thread, written by its first block's products (no zeroing pass
    # nor sum: 9.4 MB each at 256 -> 256 channels, 38 MB at 512; README section 43)
    du = block_threads.scratch("winograd_du", count * A * A * f * c).reshape(count, A * A, f, c)

    def work(worker):
        part = None
        for q0, q1, (vbuf, ybuf), _ in grid.blocks(
                [(q0, 0) for q0 in grid.starts[worker::count]], (c, f)):
            p = grid.tiles(q0, q1)
            v, ybar = planes(vbuf, c, p), planes(ybuf, f, p)
            grid.input_points(x, v, q0, q1, tuple(padding))
            tiles.grad_tiles4(dout, ybar, q0, q1, rows0, cols0, d)
            product = (matrices(ybar, f), matrices(v, c).transpose(0, 2, 1))
            if part is None:
                np.matmul(*product, out=du[worker])
                part = block_threads.scratch("winograd_part", du[0].size).reshape(du.shape[1:])
            else:
                du[worker] += np.matmul(*product, out=part)

    block_threads.run(work, count, entered=True)
    dw = np.empty((f, c, 3, 3), dtype=np.float32)
    _over_filters(lambda f0, f1: filters.filter_grads(du, G, dw, f0, f1), f)
    return dw
