"""Chunked im2col + GEMM convolution: the fast path behind ``conv2d_forward``.

Why this shape (profiles in ``benchmarks/README.md``):

* Unrolling the whole batch at once writes ``C*KH*KW`` times the input into a
  fresh array (115 MB for a 16x64x56x56 3x3 layer); first-touch page faults
  doubled the cost of that copy. Unrolling a few samples at a time into one
  reused buffer keeps it in the last-level cache, so the matrix product reads
  it back from cache.
* The product writes NCHW output directly: per sample ``(F, K) @ (K, P)`` when
  each image has many positions P, or one wide ``(F, K) @ (K, m*P)`` plus a
  transpose when P is small (late layers, 7x7 or 14x14) and per-sample
  products would be too thin for BLAS.
* Backward never keeps the unrolled columns: it re-unrolls the input chunk by
  chunk (as PyTorch does), which bounds memory to the input volume.
* The input gradient of a stride-1 convolution is itself a convolution of the
  padded output gradient with the flipped, transposed filters, so it reuses the
  forward kernel instead of a KH*KW-pass col2im.
* On the compiled path the blocks are shared out among the library's threads, each
  unrolling into its own buffer and running its own one-thread products
  (``block_threads``); a product not inside such a block (one block in all, or a layer
  whose blocks stay on one thread) is split by ``block_threads.matmul``, since OpenBLAS
  runs one thread inside volnet's layers. Under ``VOLNET_KERNELS=numpy`` one thread does
  the blocks in turn and OpenBLAS splits the products.
* A 1x1 unpadded layer at inference, any stride (:func:`_pointwise`), needs no unrolling: its
  (subsampled) input is the column matrix. Its samples go on the block threads, each product
  followed at once by its epilogue on the thread that wrote it (:class:`Epilogue`), and on
  7x7 maps a thread's samples make one wide product whose transpose into NCHW is the
  epilogue's pass.
* A batch smaller than the threads (inference at batch 1) has no samples to share out: its
  product is split by filters (:func:`_product_by_filters`), each thread writing its rows of
  the output and then their bias/scale/residual/ReLU epilogue, so the output is written once
  and never read back by the other core.

Shapes: x (N, C, H, W), w (F, C/G, KH, KW), out (N, F, H_out, W_out),
K = C/G * KH * KW, P = H_out * W_out.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from volnet.functional.activation import bias_add_, bias_add_transposed
from volnet.runtime import block_threads

CHUNK_BYTES = 8 * 2**20     # unrolled columns per chunk: well inside a 32 MB L3
WIDE_BELOW = 256            # positions per image under which one wide product wins: 14x14
#                             and 7x7 maps yes, 16x16 to 31x31 no (the wide product's output
#                             transpose cost more: LeNet conv1, 28x28, fwd+bwd 2.05 -> 1.0 ms;
#                             benchmarks/README.md section 24)
KEEP_BYTES = 16 * 2**20     # columns up to this size are kept from forward for backward
THREAD_BELOW = 2**20        # filter-matrix entries (F/G x K) under which blocks go on threads
POINTWISE_WIDE_BELOW = 100  # positions per image under which an inference 1x1 layer's
#   samples on one block thread are one wide product (F, C) @ (C, m*P), its transpose into
#   NCHW done by the epilogue's pass (_pointwise). Batch 8, two threads, min ms, per-sample
#   products / wide / main's path (benchmarks/README.md, 45): 7x7 512->2048 +residual
#   6.57 / 5.11 / 6.71, 2048->512 6.15 / 4.70 / 6.25, 1024->2048 stride 2 from 14x14 11.37
#   / 8.90 / 9.41 (main: im2col, wide); not 14x14: 256->1024 +residual 4.77 / 4.96,
#   1024->256 4.61 / 5.09 (BLAS at one thread: (2048x512) @ (512x49) 136 GFLOP/s, @ (512x196)
#   199; (1024x256) @ (256x196) 197, @ (256x784) 215, less the copy into the wide layout)


def keeps_columns(x_shape, w_shape, out_size, itemsize) -> bool:
    """Whether a training forward (``keep_cols``) unrolls the whole batch in one block and
    keeps the columns for backward: at most KEEP_BYTES of them (the dw that reads them
    skips its own unrolling)."""
    n, c = x_shape[:2]
    kh, kw = w_shape[2:]
    return itemsize * n * c * kh * kw * out_size[0] * out_size[1] <= KEEP_BYTES


def _threads(w_shape, groups) -> int:
    """Threads for a layer's blocks: the library's count when its products are small enough
    that one-thread BLAS per block beats splitting each product, else 1 (each product is
    then split by ``block_threads.matmul``).

    Measured fwd+bwd, two threads (benchmarks/README.md): 16x256x14x14 (F x K = 256 x 2304)
    112 ms on block threads vs 121; 16x512x7x7 (512 x 4608) 107 vs 95.
    """
    f, cg, kh, kw = w_shape
    if (f // groups) * cg * kh * kw >= THREAD_BELOW:
        return 1
    return block_threads.workers()


def pad_zeros(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    """Zero-pad H and W (one allocation and one copy; np.pad is several times slower)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _windows(xp, kernel_size, stride, dilation, out_size, wide):
    """Strided view of every window: (C, KH, KW, m, Ho, Wo) if wide, else (m, C, KH, KW, Ho, Wo)."""
    m, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    (kh, kw), (st_h, st_w), (dh, dw), (ho, wo) = kernel_size, stride, dilation, out_size
    if wide:
        shape, strides = (c, kh, kw, m, ho, wo), (sc, sh * dh, sw * dw, sn, sh * st_h, sw * st_w)
    else:
        shape, strides = (m, c, kh, kw, ho, wo), (sn, sc, sh * dh, sw * dw, sh * st_h, sw * st_w)
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


class _Plan:
    """Chunk of samples, block of output rows, layout and a reusable column buffer.

    A chunk holds as many samples as fit in ``budget`` bytes of columns; when one
    image alone is larger (VGG's 224x224 layers: 115 MB of columns), it is cut
    into blocks of output rows instead, so the columns still stay in cache.
    """

    def __init__(self, x_shape, w_shape, out_size, groups, dtype, wide=None, budget=None,
                 threads=1):
        n, c = x_shape[:2]
        kh, kw = w_shape[2:]
        ho, wo = out_size
        self.k = c // groups * kh * kw
        self.p = ho * wo
        per_row = c * kh * kw * wo * np.dtype(dtype).itemsize
        budget = CHUNK_BYTES if budget is None else budget
        share = max(1, -(-n // threads))        # at least one chunk per thread
        self.chunk = int(max(1, min(share, budget // max(per_row * ho, 1))))
        self.rows = ho if self.chunk > 1 else int(max(1, min(ho, budget // max(per_row, 1))))
        self.wide = self.p < WIDE_BELOW if wide is None else wide
        self.groups = groups
        self.size, self.dtype = self.chunk * c * kh * kw * self.rows * wo, dtype
        self.block_list = tuple(self.blocks(n, ho))

    @staticmethod
    def of(x_shape, w_shape, out_size, groups, dtype, wide=None, budget=None, threads=1):
        """The plan of a layer shape, made once and reused by every later call (at batch 1
        the plan and its block list cost as much as a small layer's product); keyed by
        the chunk budget and WIDE_BELOW in force."""
        budget = CHUNK_BYTES if budget is None else budget
        wide = out_size[0] * out_size[1] < WIDE_BELOW if wide is None else wide
        return _cached_plan(tuple(x_shape), tuple(w_shape), tuple(out_size), int(groups),
                            np.dtype(dtype), bool(wide), int(budget), int(threads))

    def buffer(self, keep: bool = False) -> np.ndarray:
        """A column buffer for one thread's blocks: the thread's reused scratch array, or
        a fresh one when the columns are ``keep``-t for backward."""
        if keep:
            return np.empty(self.size, dtype=self.dtype)
        return block_threads.scratch("im2col", self.size, self.dtype)

    def blocks(self, n, ho):
        """(first sample, end sample, first row, end row) of every block."""
        for s in range(0, n, self.chunk):
            for r in range(0, ho, self.rows):
                yield s, min(n, s + self.chunk), r, min(ho, r + self.rows)

    def cols(self, xp, block, kernel_size, stride, dilation, wo, buffer):
        """Unroll one block into ``buffer``: (G, K, m*rows*W_out) if wide else
        (m, G, K, rows*W_out)."""
        s, e, r0, r1 = block
        (kh, _), (st_h, _), (dh, _) = kernel_size, stride, dilation
        xp_block = xp[s:e, :, r0 * st_h:(r1 - 1) * st_h + dh * (kh - 1) + 1]
        view = _windows(xp_block, kernel_size, stride, dilation, (r1 - r0, wo), self.wide)
        buf = buffer[:view.size].reshape(view.shape)
        np.copyto(buf, view)
        if self.wide:
            return buf.reshape(self.groups, self.k, -1)
        return buf.reshape(e - s, self.groups, self.k, -1)


_cached_plan = functools.lru_cache(maxsize=1024)(_Plan)


def forward(x, w, stride, padding, dilation, groups, out_size, keep_cols=False, epilogue=None):
    """(out, cols): out (N, F, Ho, Wo) = cross-correlation of x with w (no bias), then
    ``epilogue(out, f0, f1)`` (when given: the caller's bias/scale/ReLU/residual pass over
    channels [f0, f1), in place) over every channel once.

    ``cols`` is the unrolled input when ``keep_cols`` and the whole batch fit in
    one block (small layers: backward then skips re-unrolling), else None.
    """
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    ho, wo = out_size
    fg = f // groups
    total = x.dtype.itemsize * n * c * kh * kw * ho * wo
    # small layers in training: unroll the whole batch once and keep it for backward
    keep_whole = keep_cols and keeps_columns(x.shape, w.shape, out_size, x.dtype.itemsize)
    budget = total if keep_whole else None
    threads = 1 if keep_whole else _threads(w.shape, groups)   # a kept block is one block
    if kh == kw == 1 and tuple(padding) == (0, 0) and not keep_cols:
        return _pointwise(x, w, stride, groups, out_size, epilogue), None
    out = np.empty((n, f, ho, wo), dtype=x.dtype)
    out_g = out.reshape(n, groups, fg, ho * wo)
    if kh == kw == 1 and tuple(stride) == (1, 1) and tuple(padding) == (0, 0):
        # 1x1 in training: the input already is the column matrix, one product per sample
        w_mat = w.reshape(groups, fg, c // groups)
        x_g = x.reshape(n, groups, c // groups, h * wd)
        if threads == 1 or n < threads:
            # fewer samples than threads (batch 1), or a layer kept off block threads:
            # split the product instead; as one np.matmul it left the second core idle
            # (benchmarks/README.md section 37)
            count = block_threads.split_count(n * f * (c // groups) * h * wd)
            if groups > 1 or n > 1 or count <= 1:     # one sample: channel slices contiguous
                block_threads.matmul(w_mat, x_g, out=out_g)
                if epilogue is not None:
                    epilogue(out, 0, f)
                return out, None
            _product_by_filters(w_mat, x_g, out, epilogue, count)
            return out, None
        parts = max(1, min(threads, n))
        bounds = [n * i // parts for i in range(parts + 1)]
        block_threads.run(lambda i: np.matmul(w_mat, x_g[bounds[i]:bounds[i + 1]],
                                              out=out_g[bounds[i]:bounds[i + 1]]), parts)
        if epilogue is not None:
            epilogue(out, 0, f)
        return out, None
    if not keep_cols and groups == 1:
        # fewer samples than threads (batch 1): no per-sample blocks to share out, so the
        # product is split by filters instead, each thread writing its rows once
        count = block_threads.split_count(n * f * c * kh * kw * ho * wo)
        if count > n:
            plan = _Plan.of(tuple(x.shape), tuple(w.shape), tuple(out_size), 1, x.dtype,
                            wide=False)
            if len(plan.block_list) == 1:
                _forward_by_filters(x, w, stride, padding, dilation, plan, out, epilogue,
                                    count)
                return out, None
    # one sample: the wide layout is the per-sample one, whose product writes NCHW directly
    # (the wide product's transposed copy into the output is a pass over it for nothing)
    plan = _Plan.of(tuple(x.shape), tuple(w.shape), tuple(out_size), groups, x.dtype,
                    wide=False if n == 1 else None, budget=budget, threads=threads)
    w_mat = w.reshape(groups, fg, plan.k)
    xp = pad_zeros(x, padding)
    if keep_whole:
        parts = min(n, block_threads.split_count(n * f * plan.k * ho * wo))
        if parts > 1:
            cols = _kept_on_threads(xp, w_mat, out, plan, (kh, kw), stride, dilation, parts)
            if epilogue is not None:
                epilogue(out, 0, f)
            return out, cols
    blocks = plan.block_list
    count = max(1, min(threads, len(blocks)))

    def work(worker):
        buffer, cols = plan.buffer(keep=keep_whole), None   # cols: None for an empty batch
        for block in blocks[worker::count]:
            s, e, r0, r1 = block
            cols = plan.cols(xp, block, (kh, kw), stride, dilation, wo, buffer)
            if plan.wide:
                res = block_threads.matmul(w_mat, cols)             # (G, F/G, m*rows*W_out)
                out[s:e, :, r0:r1] = res.reshape(f, e - s, r1 - r0, wo).transpose(1, 0, 2, 3)
            elif r1 - r0 == ho:                                     # straight into NCHW
                block_threads.matmul(w_mat, cols, out=out_g[s:e])
            else:
                # a row block of NCHW has a leading dimension of H_out*W_out; matmul writing
                # there directly measured 10x slower than a contiguous product plus a copy
                out_g[s:e, :, :, r0 * wo:r1 * wo] = block_threads.matmul(w_mat, cols)
        return cols

    cols = block_threads.run(work, count)[0]
    if epilogue is not None:
        epilogue(out, 0, f)
    return out, (cols if keep_whole else None)      # only a kept block is a fresh array


class Epilogue:
    """What follows a convolution's product, per output channel: ``out * scale + bias``, plus
    ``residual`` (an array of the output's shape), then max(0, .) when ``relu``
    (functional.activation.bias_add_; None: no scale, no bias, no residual). Applied by the
    thread that wrote each block of the output, to that block, while it is in its core's
    cache."""

    __slots__ = ("bias", "relu", "residual", "scale")

    def __init__(self, bias, scale, residual, relu):
        self.bias, self.scale, self.residual, self.relu = bias, scale, residual, bool(relu)

    def __call__(self, out, f0, f1, s0=0, s1=None):
        """In place on channels [f0, f1) of samples [s0, s1) of ``out`` (N, F, Ho, Wo)."""
        rows, part = slice(s0, s1), slice(f0, f1)
        bias_add_(out[rows, part], None if self.bias is None else self.bias[part], self.relu,
                  None if self.scale is None else self.scale[part],
                  None if self.residual is None else self.residual[rows, part])

    def transposed(self, src, out, s0, s1):
        """Samples [s0, s1) of ``out`` (N, F, Ho, Wo) from their product laid out channels
        first, ``src`` (F, s1 - s0, Ho, Wo): the transpose and the epilogue in one pass."""
        bias_add_transposed(src, out[s0:s1], self.bias, self.relu, self.scale,
                            None if self.residual is None else self.residual[s0:s1])


def _pointwise(x, w, stride, groups, out_size, epilogue):
    """Inference of a 1x1 unpadded convolution, any stride, then ``epilogue`` (an
    :class:`Epilogue` or None): the input (subsampled when strided) is its own column
    matrix, so no im2col.

    * Fewer samples than block threads (batch 1): the product split by filters
      (:func:`_product_by_filters`), each thread writing its rows and their epilogue.
    * Else the samples are shared out among the block threads, each running its own
      one-thread products and, right after each, the epilogue on what it just wrote
      (one sample's output, still in that core's cache; main's one pass after all the
      products read the whole output back from memory, on one thread below
      launch.PARALLEL_MIN). Batch 8, two threads, CPU ms (median), per sample / each
      thread's epilogue after all its products / main: 128->512 28x28 +residual 5.49 /
      6.54 / 6.45, 256->1024 14x14 +residual 4.93 / 5.60 / 5.59; 64->256 56x56 +residual
      7.15 / 7.15-9.16 / 9.26 (benchmarks/README.md, 45). Maps of fewer than POINTWISE_WIDE_BELOW
      positions (7x7) make one wide product of a thread's samples, whose transpose into
      NCHW is folded into the epilogue's pass (:meth:`Epilogue.transposed`).

    A strided layer's subsampled input is copied into a reused per-thread buffer (one
    sample, or one thread's samples when wide), where im2col went through its plan of
    blocks and strided window views.
    """
    n, c = x.shape[:2]
    f = w.shape[0]
    fg, cg = f // groups, c // groups
    ho, wo = out_size
    p = ho * wo
    out = np.empty((n, f, ho, wo), dtype=x.dtype)
    out_g = out.reshape(n, groups, fg, p)
    w_mat = w.reshape(groups, fg, cg)
    strided = tuple(stride) != (1, 1)
    x_sub = x[:, :, ::stride[0], ::stride[1]] if strided else x      # (N, C, Ho, Wo)
    threads = block_threads.workers()
    if n < threads or threads == 1:
        if strided and n * c * p * x.itemsize <= CHUNK_BYTES:     # batch 1: kept scratch
            cols = block_threads.scratch("pointwise", n * c * p, x.dtype)
            np.copyto(cols.reshape(n, c, ho, wo), x_sub)
            cols = cols.reshape(n, groups, cg, p)
        elif strided:       # a large batch on one thread (VOLNET_KERNELS=numpy): not kept
            cols = np.ascontiguousarray(x_sub).reshape(n, groups, cg, p)
        else:
            cols = x.reshape(n, groups, cg, p)
        count = block_threads.split_count(n * f * cg * p)
        if groups > 1 or n > 1 or count <= 1:     # one sample: channel slices contiguous
            block_threads.matmul(w_mat, cols, out=out_g)
            if epilogue is not None:
                epilogue(out, 0, f)
        else:
            # one sample: as one np.matmul it left the second core idle (section 37)
            _product_by_filters(w_mat, cols, out, epilogue, count)
        return out
    parts = min(threads, n)
    bounds = [n * i // parts for i in range(parts + 1)]
    wide = p < POINTWISE_WIDE_BELOW
    x_g = None if strided else x.reshape(n, groups, cg, p)
    # samples per wide product: its input and output buffers within CHUNK_BYTES each
    chunk = max(1, CHUNK_BYTES // (max(c, f) * p * x.itemsize))

    def part(i):
        if wide:
            for s0 in range(bounds[i], bounds[i + 1], chunk):
                s1 = min(bounds[i + 1], s0 + chunk)
                m = s1 - s0
                cols = block_threads.scratch("pointwise", c * m * p, x.dtype)
                np.copyto(cols.reshape(c, m, ho, wo), x_sub[s0:s1].transpose(1, 0, 2, 3))
                res = block_threads.scratch("pointwise-out", f * m * p, x.dtype)
                np.matmul(w_mat, cols.reshape(groups, cg, m * p),
                          out=res.reshape(groups, fg, m * p))
                res = res.reshape(f, m, ho, wo)
                if epilogue is None:
                    np.copyto(out[s0:s1], res.transpose(1, 0, 2, 3))
                else:
                    epilogue.transposed(res, out, s0, s1)
            return
        s0, s1 = bounds[i], bounds[i + 1]
        cols = block_threads.scratch("pointwise", c * p, x.dtype) if strided else None
        for s in range(s0, s1):
            if strided:
                np.copyto(cols.reshape(c, ho, wo), x_sub[s])
            np.matmul(w_mat, x_g[s] if x_g is not None else cols.reshape(groups, cg, p),
                      out=out_g[s])
            if epilogue is not None:
                epilogue(out, 0, f, s, s + 1)

    block_threads.run(part, parts)
    return out


def _kept_on_threads(xp, w_mat, out, plan, kernel_size, stride, dilation, parts):
    """The forward of a batch whose columns are kept for backward (one block, one fresh
    array), cut by samples over ``parts`` threads: each unrolls its samples into its share
    of the kept columns and runs their product with one-thread BLAS, writing its samples'
    outputs. Returns the columns, laid out as :meth:`_Plan.cols` lays one block.

    Unrolled on one thread, then multiplied on two, the N16 C512 7x7 layer's 14 MB of
    columns (2.2 ms) was a serial step of its forward (benchmarks/README.md section 43).
    """
    n = xp.shape[0]
    groups, fg, k = w_mat.shape
    ho, wo = out.shape[2:]
    cols = plan.buffer(keep=True)[:n * groups * k * ho * wo]
    view = _windows(xp, kernel_size, stride, dilation, (ho, wo), plan.wide)
    edges = np.linspace(0, n, parts + 1).astype(int)
    out_g = out.reshape(n, groups, fg, ho * wo)
    # wide: (C, KH, KW, N, Ho, Wo), a thread's samples a column range; else (N, C, KH, KW,
    # Ho, Wo), a thread's samples contiguous
    whole = cols.reshape(view.shape)
    mat = (cols.reshape(groups, k, n * ho * wo) if plan.wide
           else cols.reshape(n, groups, k, ho * wo))

    def part(i):
        s, e = int(edges[i]), int(edges[i + 1])
        if plan.wide:
            np.copyto(whole[:, :, :, s:e], view[:, :, :, s:e])
            res = np.matmul(w_mat, mat[:, :, s * ho * wo:e * ho * wo])
            out[s:e] = res.reshape(groups * fg, e - s, ho, wo).transpose(1, 0, 2, 3)
        else:
            np.copyto(whole[s:e], view[s:e])
            np.matmul(w_mat, mat[s:e], out=out_g[s:e])

    block_threads.run(part, parts)
    return mat


def filter_edges(f: int, count: int) -> list[int]:
    """Bounds of ``count`` runs of filters (output rows) covering ``f``: equal shares,
    rounded to multiples of 16 rows (one AVX-512 register of float32 per row block of the
    BLAS kernel) where every share still holds at least 16."""
    step = 16 if f >= 16 * count else 1
    units = -(-f // step)
    return [min(f, step * (units * i // count)) for i in range(count)] + [f]


def _forward_by_filters(x, w, stride, padding, dilation, plan, out, epilogue, count):
    """``out`` = the convolution of a batch smaller than ``count`` (one block of columns,
    groups 1) by :func:`_product_by_filters`, the columns unrolled once, by the caller,
    before the hand-off (each thread unrolling them again measured no faster)."""
    kh, kw = w.shape[2:]
    cols = plan.cols(pad_zeros(x, padding), plan.block_list[0], (kh, kw), stride, dilation,
                     out.shape[3], plan.buffer())                  # (N, 1, K, P)
    _product_by_filters(w.reshape(1, w.shape[0], plan.k), cols, out, epilogue, count)


def _product_by_filters(w_mat, cols, out, epilogue, count):
    """``out`` (N, F, Ho, Wo) = ``w_mat`` (1, F, K) @ ``cols`` (N, 1, K, P), split by
    filters over ``count`` block threads: each runs its rows' one-thread product straight
    into ``out`` and then ``epilogue`` on those channels while they are in its core's
    cache. One thread's pass over the other's freshly written half cost 0.3 ms on a
    1x512x28x28 output against 0.05 ms (benchmarks/README.md section 37)."""
    n, f = out.shape[:2]
    out_g = out.reshape(n, 1, f, -1)
    edges = filter_edges(f, min(count, f))

    def part(i):
        f0, f1 = edges[i], edges[i + 1]
        np.matmul(w_mat[:, f0:f1], cols, out=out_g[:, :, f0:f1])
        if epilogue is not None:
            epilogue(out, f0, f1)

    block_threads.run(part, len(edges) - 1)


def weight_grad(x, dout, w_shape, stride, padding, dilation, groups, kept=None):
    """dw (F, C/G, KH, KW) = sum over batch and positions of dout x unrolled x.

    ``kept``: the forward's single-block columns, if it kept them. Otherwise x is
    re-unrolled in the wide layout, in blocks 4x the forward's: one product per
    block with a long inner dimension, instead of one thin product per sample
    (fewer BLAS calls, each a thread fork/join; see benchmarks/README.md). A 1x1
    stride-1 layer with enough positions needs no unrolling (:func:`_weight_grad_1x1`).
    """
    f, _, kh, kw = w_shape
    ho, wo = dout.shape[2:]
    fg = f // groups
    if kept is not None:
        return _weight_grad_block(dout, kept, groups, fg).reshape(w_shape)
    threads = _threads(w_shape, groups)
    if (kh, kw, tuple(stride), tuple(padding)) == (1, 1, (1, 1), (0, 0)) and ho * wo >= WIDE_BELOW:
        return _weight_grad_1x1(x, dout, groups, threads).reshape(w_shape)
    plan = _Plan.of(tuple(x.shape), tuple(w_shape), (ho, wo), groups, x.dtype, wide=True,
                    budget=4 * CHUNK_BYTES, threads=threads)
    xp = pad_zeros(x, padding)
    blocks = plan.block_list
    count = max(1, min(threads, len(blocks)))

    def work(worker):
        buffer = plan.buffer()
        dw = np.zeros((groups, fg, plan.k), dtype=x.dtype)
        for block in blocks[worker::count]:
            s, e, r0, r1 = block
            cols = plan.cols(xp, block, (kh, kw), stride, dilation, wo, buffer)
            dw += _weight_grad_block(dout[s:e, :, r0:r1], cols, groups, fg)
        return dw

    return sum(block_threads.run(work, count)).reshape(w_shape)


def _weight_grad_1x1(x, dout, groups, threads):
    """(G, F/G, C/G) dw of a 1x1 stride-1 layer: the input is its own column matrix, so one
    product per sample, dout[n] @ x[n]^T (or its transpose), with no unrolled copy and no
    transposed dout.
    Used from 256 positions up (one thread, ms, against the wide product: N32 C256 28x28
    K64 6.6 vs 8.9, N16 C64 56x56 K256 10.3 vs 18.0; 14x14 equal, 7x7 7.1 vs 4.7)."""
    n, c = x.shape[:2]
    f = dout.shape[1]
    x_g = x.reshape(n, groups, c // groups, -1)
    d_g = dout.reshape(n, groups, f // groups, -1)
    parts = max(1, min(threads, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    # the more channels on the product's rows: x[n] @ dout[n]^T, transposed once at the
    # end, when C/G > F/G (one thread, ms: N32 C256 28x28 K64 6.6 -> 5.3, N16 C256 56x56
    # K64 13.0 -> 10.4; the other way round for F/G > C/G: N16 C64 56x56 K256 10.5 vs 13.0;
    # benchmarks/README.md section 36)
    rows_x = c > f
    a_g, b_g = (x_g, d_g) if rows_x else (d_g, x_g)

    def work(i):
        acc = np.zeros((groups, a_g.shape[2], b_g.shape[2]), dtype=x.dtype)
        for s in range(bounds[i], bounds[i + 1]):
            acc += block_threads.matmul(a_g[s], b_g[s].transpose(0, 2, 1))
        return acc

    total = sum(block_threads.run(work, parts))
    return total.transpose(0, 2, 1) if rows_x else total


def _weight_grad_block(d, cols, groups, fg):
    """(G, F/G, K) contribution of one block; cols wide (G, K, m*P) or per-sample (m, G, K, P)."""
    m = d.shape[0]
    if cols.ndim == 3:
        d_t = np.ascontiguousarray(d.transpose(1, 0, 2, 3)).reshape(groups, fg, -1)
        return block_threads.matmul(d_t, cols.transpose(0, 2, 1))
    d_g = d.reshape(m, groups, fg, -1)
    return block_threads.matmul(d_g, cols.transpose(0, 1, 3, 2)).sum(axis=0)


def flipped_transpose(w, groups):
    """Filters of the adjoint convolution: (C, F/G, KH, KW), spatially flipped.

    The lecture's identity: backprop through a convolution is a convolution with
    spatially flipped filters.
    """
    f, cg, kh, kw = w.shape
    fg = f // groups
    w_t = w.reshape(groups, fg, cg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return np.ascontiguousarray(w_t).reshape(groups * cg, fg, kh, kw)


def input_grad_as_conv(dout, w, x_shape, padding, dilation, groups):
    """dx for a stride-1 convolution: dout padded by D(K-1)-P, correlated with flipped filters."""
    kh, kw = w.shape[2:]
    full = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    w_t = flipped_transpose(w, groups)
    return forward(dout, w_t, (1, 1), full, dilation, groups, x_shape[2:])[0]


def input_grad_by_fold(dout, w, x_shape, stride, padding, dilation, groups):
    """dx for any stride: columns W^T @ dout, summed back into their windows chunk by chunk."""
    n, c, h, wd = x_shape
    f, _, kh, kw = w.shape
    ho, wo = dout.shape[2:]
    (st_h, st_w), (ph, pw), (dh, dw_) = stride, padding, dilation
    fg = f // groups
    w_t = w.reshape(groups, fg, -1).transpose(0, 2, 1)           # (G, K, F/G)
    dx_pad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=dout.dtype)
    per_sample = c * kh * kw * ho * wo * dout.itemsize
    chunk = int(max(1, min(n, CHUNK_BYTES // max(per_sample, 1))))
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        d_t = np.ascontiguousarray(dout[s:e].transpose(1, 0, 2, 3)).reshape(groups, fg, -1)
        dcols = block_threads.matmul(w_t, d_t).reshape(c, kh, kw, e - s, ho, wo)
        target = dx_pad[s:e].transpose(1, 0, 2, 3)                 # (C, m, Hp, Wp) view
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + st_h * (ho - 1) + 1, st_h)
                cols = slice(j * dw_, j * dw_ + st_w * (wo - 1) + 1, st_w)
                target[:, :, rows, cols] += dcols[:, i, j]
    if ph == pw == 0:
        return dx_pad
    return np.ascontiguousarray(dx_pad[:, :, ph:ph + h, pw:pw + wd])
