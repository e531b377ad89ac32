"""The pointwise (1x1, unpadded) float32 convolution at inference, with its epilogue fused:
positions in the vector lanes, filters broadcast, NCHW in and out with nothing packed.

A 1x1 convolution of one sample is the product out (F, P) = w (F, C) @ x (C, P), where
every row of x is one channel's map, contiguous. :func:`_block` is its register block:
6 filters x 64 positions (24 registers of 16 floats), kept through the whole sum over the
channels; per channel, four loads of 16 consecutive positions of that channel's row, six
weights broadcast (read in place from six rows of w: nothing derived from the weights,
nothing to keep or check for staleness) and 24 fused multiply-adds. The block then applies
the epilogue in registers (scale and bias: a folded batch norm; the residual sum; the
ReLU, NaN passing, as the other kernels' ``v <= 0`` test) and stores its six rows of 64
positions straight into the NCHW output: no transposed tile, no second pass. The block is
AVX-512's; without AVX-512 (16 registers of 8 floats) a block of 16 positions lost to BLAS
on every network measured, so the plan keeps 1x1 layers on BLAS there
(``conv_choice.pointwise_fits``; benchmarks/README.md, section 63).

The outer kernel (``outer.py``: filters in the lanes, positions broadcast) serves any
stride, padding and dilation, but on a 1x1 layer it reads six positions of each channel's
row, 24 bytes, a channel at a time from as many rows as there are channels, and its tile
goes through a 16 x 16 transposed store; BLAS (``conv_gemm._pointwise``) runs the epilogue
as a second pass over the output. Measured per layer in benchmarks/README.md, section 60.

Each output sums its channels in one order in float32 with fused multiply-adds (the error
class of im2col's GEMM and the direct kernel), then ``* scale + bias + residual``, each its
own rounding, as ``outer_kernels._store`` does.

Bounds: the block indexes raw pointers. Every x load is a masked load of lanes below
``valid`` (the positions left in the panel, 1 to 64) of row c < K from ``xo``; the item
loop (:func:`items`) passes xo = the row of channel 0 of the group at the panel's first
position, so that xo + c * ldx + lane < the sample's end for c < C/G. The six weight rows
are those of filters f0 + min(j, rows - 1), below F; out and residual are stored and read
masked, rows j < rows only. Every operand's shape is checked in :func:`forward` before
any kernel runs. tests/functional/test_pointwise_conv.py runs the edge shapes on
guard-filled arrays.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from volnet.errors import ShapeError
from volnet.functional.compiled import epilogue
from volnet.functional.compiled.intrinsics import (
    array_data,
    lane_mask,
    masked_load,
    masked_store,
    prefetch,
    splat,
)
from volnet.runtime import block_threads

ROWS = 6            # filters per register block (broadcast)
VECTORS = 4         # 16-float vectors of positions per register block
LANES = 16
PANEL = VECTORS * LANES     # positions per register block
K_CHUNK = 128       # channels per pass over a panel: their 64 columns of x (32 KB) stay in
#                     L1 while every filter block runs over them


def _block_kernel(vectors: int):
    """The register block of 6 filters x ``vectors`` 16-position vectors, as a numba
    intrinsic ``block(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias,
    res, flags)``: for j < rows and lanes q < valid (1 to 16 * vectors) sets

        out[oo + j * ldo + q] = relu(sum_{c < k} w[wo + j * ldw + c] * x[xo + c * ldx + q]
                                     * scale[j] + bias[j] + res[oo + j * ldo + q])

    where ``flags`` bit 0 applies ``scale``, 1 ``bias`` (both read from index j: the
    caller passes views starting at the block's first filter), 2 the residual and 3 the
    ReLU (``v <= 0`` -> 0; NaN passes); with bit 4 the sum starts from what ``out``
    holds (a chunk of channels continuing the sum of the chunks before: float32 stores
    and loads are exact, so the order of the sum is unchanged). Rows j >= rows compute
    filter rows - 1 again and store nothing."""

    @intrinsic
    def block(typingctx, x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias,
              res, flags):
        sig = types.void(x, types.intp, types.intp, w, types.intp, types.intp, types.intp,
                         types.intp, types.intp, out, types.intp, types.intp, scale, bias, res,
                         types.intp)

        def codegen(context, builder, signature, args):
            (x_arg, xo_, ldx_, w_arg, wo_, ldw_, rows_, k_, valid_, out_arg, oo_, ldo_, s_arg,
             b_arg, r_arg, flags_) = args
            sa = signature.args
            xp, wp, op = (array_data(context, builder, sa[0], x_arg),
                          array_data(context, builder, sa[3], w_arg),
                          array_data(context, builder, sa[9], out_arg))
            sp, bp, rp = (array_data(context, builder, sa[12], s_arg),
                          array_data(context, builder, sa[13], b_arg),
                          array_data(context, builder, sa[14], r_arg))
            f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
            vec = ir.VectorType(f32, LANES)
            vptr = vec.as_pointer()
            c = lambda v: ir.Constant(i64, v)
            four = ir.Constant(i32, 4)
            zero = ir.Constant(vec, [0.0] * LANES)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.fma.v16f32")
            mload, mstore = masked_load(builder, vec), masked_store(builder, vec)

            def at(base, offset):
                return builder.bitcast(builder.gep(base, [offset]), vptr)

            # lanes below valid - 16 v, per vector v
            masks = [lane_mask(builder, builder.sub(valid_, c(LANES * v)))
                     for v in range(vectors)]
            last = builder.sub(rows_, c(1))
            w_rows = [builder.gep(wp, [builder.add(wo_, builder.mul(builder.select(
                builder.icmp_signed("<", c(j), rows_), c(j), last), ldw_))])
                for j in range(ROWS)]
            o_rows = [builder.gep(op, [builder.add(oo_, builder.mul(c(j), ldo_))])
                      for j in range(ROWS)]
            bit = lambda b: builder.icmp_signed("!=", builder.and_(flags_, c(b)), c(0))
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                    for _ in range(ROWS)]
            with builder.if_then(bit(16)):
                for j in range(ROWS):
                    with builder.if_then(builder.icmp_signed("<", c(j), rows_)):
                        for v in range(vectors):
                            builder.store(builder.call(mload, [at(o_rows[j], c(LANES * v)),
                                                               four, masks[v], zero]),
                                          accs[j][v])
            x_base = builder.gep(xp, [xo_])
            with cgutils.for_range(builder, k_) as loop:
                ch = loop.index
                row = builder.gep(x_base, [builder.mul(ch, ldx_)])
                xs = [builder.call(mload, [at(row, c(LANES * v)), four, masks[v], zero])
                      for v in range(vectors)]
                for j in range(ROWS):
                    wv = splat(builder, builder.load(builder.gep(w_rows[j], [ch])), vec)
                    for v in range(vectors):
                        acc = accs[j][v]
                        builder.store(builder.call(fma, [xs[v], wv, builder.load(acc)]), acc)

            def update(j, op_):         # accs[j][v] = op_(accs[j][v], v) for every v
                for v in range(vectors):
                    builder.store(op_(builder.load(accs[j][v]), v), accs[j][v])

            for j in range(ROWS):
                with builder.if_then(builder.icmp_signed("<", c(j), rows_)):
                    row_r = builder.gep(rp, [builder.add(oo_, builder.mul(c(j), ldo_))])
                    with builder.if_then(bit(1)):
                        sv = splat(builder, builder.load(builder.gep(sp, [c(j)])), vec)
                        update(j, lambda a, v, sv=sv: builder.fmul(a, sv))
                    with builder.if_then(bit(2)):
                        bv = splat(builder, builder.load(builder.gep(bp, [c(j)])), vec)
                        update(j, lambda a, v, bv=bv: builder.fadd(a, bv))
                    with builder.if_then(bit(4)):
                        update(j, lambda a, v, row_r=row_r: builder.fadd(a, builder.call(
                            mload, [at(row_r, c(LANES * v)), four, masks[v], zero])))
                    with builder.if_then(bit(8)):
                        update(j, lambda a, v: builder.select(
                            builder.fcmp_ordered("<=", a, zero), zero, a))
                    for v in range(vectors):
                        builder.call(mstore, [builder.load(accs[j][v]),
                                              at(o_rows[j], c(LANES * v)), four, masks[v]])
            return context.get_dummy_value()

        return sig, codegen

    return block


_block4 = _block_kernel(4)
_block3 = _block_kernel(3)
_block2 = _block_kernel(2)
_block1 = _block_kernel(1)


@njit(inline="always")
def _block(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias, res,
           flags):  # pragma: no cover - compiled
    """The register block of the fewest 16-position vectors that hold ``valid``."""
    if valid > 3 * LANES:
        _block4(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias, res, flags)
    elif valid > 2 * LANES:
        _block3(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias, res, flags)
    elif valid > LANES:
        _block2(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias, res, flags)
    else:
        _block1(x, xo, ldx, w, wo, ldw, rows, k, valid, out, oo, ldo, scale, bias, res, flags)


@njit(nogil=True, cache=True)
def items(x, w2, groups, n0, n1, p0, p1, f0, f1, out, scale, bias, res,
          flags):  # pragma: no cover - compiled
    """out[n, f, p] for samples [n0, n1), filters [f0, f1) and positions [p0, p1): x (N, C,
    P) and out, res (N, F, P) C-contiguous (res read when ``flags`` & 4); w2 (F, C/G);
    scale, bias (F,) or empty (read when ``flags`` & 1, & 2). Panels of 64 positions by
    chunks of K_CHUNK channels: each chunk's columns of x stay in L1 while every 6-filter
    block of the range runs over them."""
    c_all, positions = x.shape[1:]
    f_all, cg = w2.shape
    fg = f_all // groups
    xf, wf, of, rf = x.reshape(-1), w2.reshape(-1), out.reshape(-1), res.reshape(-1)
    for n in range(n0, n1):
        for pp in range(p0, p1, PANEL):
            valid = min(PANEL, p1 - pp)
            # the next panel's columns of x, a share of its rows per filter block, so they
            # stream in while this panel's products run (its rows are C separate streams)
            nxt = pp + PANEL if pp + PANEL < p1 else -1
            last = min(p1, nxt + PANEL) - 1
            for g in range(groups):
                lo, hi = max(f0, g * fg), min(f1, (g + 1) * fg)
                blocks = -(-(hi - lo) // ROWS)
                for k0 in range(0, cg, K_CHUNK):
                    k1 = min(cg, k0 + K_CHUNK)
                    # the sum of a chunk after the first continues from out; the epilogue
                    # runs with the last
                    fl = (flags if k1 == cg else 0) | (16 if k0 > 0 else 0)
                    xo = (n * c_all + g * cg + k0) * positions + pp
                    for fb in range(lo, hi, ROWS):
                        if nxt >= 0:
                            j = (fb - lo) // ROWS
                            for ch in range(k0 + j * (k1 - k0) // blocks,
                                            k0 + (j + 1) * (k1 - k0) // blocks):
                                row = (n * c_all + g * cg + ch) * positions
                                for q in range(nxt, last + 1, LANES):
                                    prefetch(xf, row + q)
                                prefetch(xf, row + last)
                        if fb + ROWS < hi:
                            # the next block's weights for this chunk (six rows of w: short
                            # streams the hardware's prefetcher does not pick up in time)
                            for r in range(fb + ROWS, min(fb + 2 * ROWS, hi)):
                                for q in range(r * cg + k0, r * cg + k1, LANES):
                                    prefetch(wf, q)
                                prefetch(wf, r * cg + k1 - 1)
                        _block(xf, xo, positions, wf, fb * cg + k0, cg, min(ROWS, hi - fb),
                               k1 - k0, valid, of, (n * f_all + fb) * positions + pp,
                               positions, scale[fb:] if fl & 1 else scale,
                               bias[fb:] if fl & 2 else bias, rf, fl)


@functools.lru_cache(maxsize=1024)
def layout(n, f, positions, threads) -> tuple:
    """The threads' shares ((n0, n1, p0, p1, f0, f1), ...): samples first; with fewer
    samples than threads, each sample's positions in runs of whole 16-lane vectors where
    every run gets at least two panels of 64, else its filters in runs of whole 6-filter
    blocks (each thread then reads the whole input and its share of the weights, where a
    run of positions reads all the weights: batch 1, two threads, 1024->256 on 14x14, 469
    us by positions, 376 by filters; benchmarks/README.md, section 60)."""
    samples = max(1, min(threads, n))
    parts = max(1, threads // samples)
    runs = [(0, positions, 0, f)]
    if parts > 1 and positions >= 2 * PANEL * parts:
        units = -(-positions // LANES)
        edges = [min(positions, LANES * (units * i // parts)) for i in range(parts + 1)]
        runs = [(a, b, 0, f) for a, b in itertools.pairwise(edges) if b > a]
    elif parts > 1:
        blocks = -(-f // ROWS)
        edges = [min(f, ROWS * (blocks * i // parts)) for i in range(parts + 1)]
        runs = [(0, positions, a, b) for a, b in itertools.pairwise(edges) if b > a]
    return tuple((n * i // samples, n * (i + 1) // samples, *run)
                 for i in range(samples) for run in runs)


def forward(x, w, bias, stride, groups, out_size, relu=False, scale=None, residual=None):
    """(N, F, Ho, Wo) float32 1x1 unpadded convolution of x with w (F, C/G, 1, 1), any
    stride, times ``scale`` (None: 1) plus ``bias`` (None: none) per filter, plus
    ``residual`` (None: none; the output's shape), rectified when ``relu``. Any dtype and
    layout in; float32 out, computed from float32 copies.

    Raises:
        ShapeError: for operands of the wrong shapes (the kernel indexes unchecked).
    """
    if np.ndim(x) != 4 or np.ndim(w) != 4:
        raise ShapeError(f"pointwise.forward: input {np.shape(x)} and filters {np.shape(w)} "
                         f"must both be 4-D, (N, C, H, W) and (F, C / groups, 1, 1)")
    n, c, h, wd = x.shape
    f = w.shape[0]
    ho, wo = out_size
    sh, sw = stride
    if (groups < 1 or w.shape[2:] != (1, 1) or c != w.shape[1] * groups
            or f % groups or min(f, c, ho, wo, sh, sw) < 1
            or (ho - 1) * sh >= h or (wo - 1) * sw >= wd):
        raise ShapeError(f"pointwise.forward: filters {tuple(w.shape)} in {groups} groups, "
                         f"stride {tuple(stride)} and output {tuple(out_size)} do not fit an "
                         f"input {tuple(x.shape)}; pass 1x1 weights (F, C / groups, 1, 1) "
                         f"with F a multiple of groups, and the output size "
                         f"conv_output_size gives")
    x = np.asarray(x, dtype=np.float32)
    w2 = np.ascontiguousarray(w, dtype=np.float32).reshape(f, c // groups)
    out = np.empty((n, f, ho, wo), dtype=np.float32)
    s, b, res = epilogue.operands("pointwise.forward", out, bias, scale, residual)
    flags = ((scale is not None) | (bias is not None) << 1 | (residual is not None) << 2
             | bool(relu) << 3)
    p = ho * wo
    out3, res3 = out.reshape(n, f, p), res.reshape(n, f, p)
    shares = layout(n, f, p, block_threads.split_count(n * f * (c // groups) * p,
                                                       same_bits=True))
    strided = (sh, sw) != (1, 1)
    sub = x[:, :, ::sh, ::sw][:, :, :ho, :wo] if strided else x
    if strided and len(shares) > 1 and shares[0][:2] == shares[1][:2]:
        # threads sharing a sample read all of its subsampled input: copied once, here
        x3 = block_threads.scratch("pointwise_sub", n * c * p).reshape(n, c, ho, wo)
        np.copyto(x3, sub)
        sub, strided = x3, False
    x3 = np.ascontiguousarray(sub).reshape(n, c, p) if not strided else None

    def work(i):
        n0, n1, *rest = shares[i]
        if x3 is not None:
            items(x3, w2, int(groups), n0, n1, *rest, out3, s, b, res3, flags)
            return
        # each sample subsampled by the thread that runs it, into that thread's scratch
        one = block_threads.scratch("pointwise_sub", c * p).reshape(1, c, ho, wo)
        for m in range(n0, n1):
            np.copyto(one[0], sub[m])
            items(one.reshape(1, c, p), w2, int(groups), 0, 1, *rest, out3[m:m + 1], s, b,
                  res3[m:m + 1], flags)

    block_threads.run(work, len(shares))
    return out
