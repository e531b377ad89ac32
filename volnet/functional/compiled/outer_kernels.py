"""The kernels of the outer-product float32 convolution (``outer.py``): filters in the vector
lanes, output positions broadcast, the filters read where they are.

Every tap k = (c, i, j) of a convolution adds one outer product to the outputs:

    out[p, f] += x_pad[c, oh(p) * sh + i * dh, ow(p) * sw + j * dw] * w[f, k]

a column of inputs (one per output position p) times a row of weights (one per filter f).
:func:`_micro_kernel` builds the register block: 6 positions x 64 filters (24 registers
of 16 floats) kept through the whole sum over a chunk of taps: per tap, four loads of 16
filters' weights, six broadcast inputs and 24 fused multiply-adds. The six positions are
any six outputs, each read through its own offset into the zero-padded input, so stride,
dilation and maps of any width cost nothing extra: no position is computed and dropped
except in a map's last block (positions round up to 6), and no input is unrolled. This is
the register blocking of onnxruntime's NCHWc convolution (MLAS), on NCHW tensors.

The weights are read in place, w (F, C/G * KH * KW) row by row: for each chunk of taps,
:func:`_load_chunk` transposes the chunk of 64 filters into a small buffer (taps x 64,
in L1/L2) with 16x16 register transposes (:func:`_transpose16`), and every position block
of the tile reuses it. So nothing is derived from the weights and kept: no packed copy to
check for staleness (functional/weight_cache.py's bitwise check reads the weights twice,
0.7 ms at 512x512x3x3 on one core, as much as the whole layer), the same code in training
and inference, and the weights cross the memory bus once per call.

Each output sums its taps in one order in float32 with fused multiply-adds, the error class
of im2col's GEMM and the direct kernel (not Winograd's).

The partial sums of a tile of positions sit position-major in a scratch (rows of 64
filters); the store (:func:`_store`) transposes them back to NCHW 16 x 16 at a time and
applies the epilogue in the same pass: scale and bias (a folded batch norm), a residual
sum, the ReLU (NaN passes, as the other kernels' bias pass and ``np.maximum``: no ``fastmath``).

Bounds: the intrinsics index raw pointers, so every access stays inside its array by
construction, with no check in the loops. The input read for position p and tap k = (c, i,
j) of group g is ``xo + inb[p] + off[k]`` = g C/G Hp Wp + (oh S_h + i D_h) Wp + ow S_w
+ j D_w + c Hp Wp, inside the sample's C Hp Wp floats because outer.py's
``_check_shapes`` holds (Ho - 1) S + (K - 1) D < H + 2P on both axes and C = G C/G; the
tail of the last block of 6 positions repeats the last position (``outer.layout``), so
it reads what that one does. ``inb`` is read below the tile's end te <= the item's t1 <=
its length (positions rounded up to 6), ``off`` below K. ``buf`` holds taps < k_chunk of
lanes < 64 (``_load_chunk`` reads filters < nf of w2); ``prod`` and ``tmp`` rows < tile
(te - ts, a multiple of 6) of lanes < 64; ``_store`` writes positions < min(te, Ho Wo)
of filters < F, and reads ``scale``, ``bias`` (F,) and ``residual`` (out's shape), which
outer.forward checks. tests/functional/test_outer_conv.py runs the edge shapes on
guard-filled arrays. A group of ``count`` samples sharing a tile reads ``inb_g[p] = (q //
(Ho Wo)) C Hp Wp + inb[q % (Ho Wo)]`` with q = min(p, count Ho Wo - 1): inside the group's
samples (packed one after another into ``x_in``, ``outer.layout``'s group of them, or x's
samples g0 .. g0 + count - 1); its tile (``outer.layout``) holds count Ho Wo rounded up to
6 rows. dw (``weight_grad_items``) reads the same addresses with taps and positions
swapped: taps rounded up to 6 repeat the last (``outer._taps_rounded``; ``acc`` has that
many rows), positions only below count Ho Wo; ``buf`` rows < p_chunk.

The 16-float vectors are AVX-512 registers. A CPU without AVX-512 (AVX2: 16 registers of
8 floats, where LLVM splits each 16-float vector in two) takes one 16-filter vector per
register block (:func:`block_vectors`): 6 x 16 filters in 12 registers, the four vectors
of a 64-filter block one after another, each at its lane offset into ``buf`` and
``prod``; the block of 24 would keep 48 registers' worth and spill on every tap (N16
512@7x7 forward on a 2-core EPYC without AVX-512: 60 -> 28 ms; benchmarks/README.md,
section 63). Each output's sum is the same in both: the same bits. Written as LLVM IR
through numba intrinsics, as direct_kernels.py is: numba's loops do not keep
accumulators in registers.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from volnet.functional.compiled.direct_kernels import pack_sample
from volnet.functional.compiled.intrinsics import array_data, prefetch
from volnet.runtime.spin_wait import raise_flag

POSITIONS = 6       # output positions per register block
FILTERS = 64        # filters per register block: four 16-float vectors
LANES = 16


def block_vectors(wide: bool) -> int:
    """The most 16-filter vectors one register block of 6 positions takes: 4 where the CPU
    has 32 vector registers of 16 floats (AVX-512: 24 accumulators), else 1 (6 vectors, 12
    of AVX2's 16 registers of 8 floats; 4 would spill on every tap)."""
    return 4 if wide else 1


def _micro_kernel(vectors: int):
    """The register block as a numba intrinsic:
    ``_micro(x, xo, off, k0, k1, inb, b0, buf, prod, row0, add, lane0)`` sets, for j < 6
    and lane0 <= f < lane0 + 16 * vectors,
    ``prod[(row0 + j) * 64 + f] (+)= sum_{k0 <= k < k1} x[xo + inb[b0 + j] + off[k]] *
    buf[(k - k0) * 64 + f]`` (``add`` 1: the sum continues from what prod holds; 2: the sum
    starts from zero and is then added to what prod holds, one rounding per call: the
    blocked sum of weight_grad_items)."""

    @intrinsic
    def micro(typingctx, x, xo, off, k0, k1, inb, b0, buf, prod, row0, add, lane0):
        sig = types.void(x, types.intp, off, types.intp, types.intp, inb, types.intp, buf, prod,
                         types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            (x_arg, xo_, off_arg, k0_, k1_, inb_arg, b0_, buf_arg, prod_arg, row0_, add_,
             lane0_) = args
            sa = signature.args
            xp = array_data(context, builder, sa[0], x_arg)
            offp = array_data(context, builder, sa[2], off_arg)
            inbp = array_data(context, builder, sa[5], inb_arg)
            # the block's first filter lane in buf's and prod's rows of 64
            bufp, prodp = (builder.gep(array_data(context, builder, sa[7], buf_arg), [lane0_]),
                           builder.gep(array_data(context, builder, sa[8], prod_arg), [lane0_]))
            f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
            vec = ir.VectorType(f32, LANES)
            vptr = vec.as_pointer()
            zero = ir.Constant(vec, [0.0] * LANES)
            splat = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)
            # accumulators in allocas: LLVM's mem2reg turns them into registers
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                    for _ in range(POSITIONS)]
            c = lambda v: ir.Constant(i64, v)

            def vload(base, v):     # the v-th 16-float vector from base (4-byte aligned)
                load = builder.load(builder.bitcast(builder.gep(base, [c(LANES * v)]), vptr))
                load.align = 4
                return load
            x_base = builder.gep(xp, [xo_])
            sources = [builder.gep(x_base, [builder.load(builder.gep(inbp, [builder.add(
                b0_, c(j))]))]) for j in range(POSITIONS)]
            rows = [builder.gep(prodp, [builder.mul(builder.add(row0_, c(j)), c(FILTERS))])
                    for j in range(POSITIONS)]
            with builder.if_then(builder.icmp_signed("==", add_, c(1))):
                for j in range(POSITIONS):
                    for v in range(vectors):
                        builder.store(vload(rows[j], v), accs[j][v])
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.fma.v16f32")
            with cgutils.for_range_slice(builder, k0_, k1_, c(1)) as (k, _):
                tap = builder.load(builder.gep(offp, [k]))
                w_row = builder.gep(bufp, [builder.mul(builder.sub(k, k0_), c(FILTERS))])
                ws = [vload(w_row, v) for v in range(vectors)]
                for j in range(POSITIONS):
                    one = builder.load(builder.gep(sources[j], [tap]))
                    xv = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vec, None), one, ir.Constant(i32, 0)),
                        ir.Constant(vec, None), splat)
                    for v in range(vectors):
                        acc = accs[j][v]
                        builder.store(builder.call(fma, [ws[v], xv, builder.load(acc)]), acc)
            with builder.if_then(builder.icmp_signed("==", add_, c(2))):
                for j in range(POSITIONS):
                    for v in range(vectors):
                        builder.store(builder.fadd(builder.load(accs[j][v]), vload(rows[j], v)),
                                      accs[j][v])
            for j in range(POSITIONS):
                for v in range(vectors):
                    store = builder.store(builder.load(accs[j][v]), builder.bitcast(
                        builder.gep(rows[j], [c(LANES * v)]), vptr))
                    store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return micro


_micro4 = _micro_kernel(4)
_micro3 = _micro_kernel(3)
_micro2 = _micro_kernel(2)
_micro1 = _micro_kernel(1)


@intrinsic
def _transpose16(typingctx, src, s0, lds, dst, d0, ldd):
    """``_transpose16(src, s0, lds, dst, d0, ldd)``: dst[d0 + c * ldd + r] = src[s0 + r * lds
    + c] for r, c < 16, in registers (four rounds of two-vector shuffles, each swapping the
    off-diagonal blocks of the next smaller size)."""
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        s_arg, s0_, lds_, d_arg, d0_, ldd_ = args
        sp = array_data(context, builder, signature.args[0], s_arg)
        dp = array_data(context, builder, signature.args[3], d_arg)
        f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
        vec = ir.VectorType(f32, LANES)
        vptr = vec.as_pointer()
        rows = []
        for r in range(LANES):
            at = builder.gep(sp, [builder.add(s0_, builder.mul(ir.Constant(i64, r), lds_))])
            load = builder.load(builder.bitcast(at, vptr))
            load.align = 4
            rows.append(load)
        for b in (8, 4, 2, 1):
            new = list(rows)
            for i in range(LANES):
                if i & b:
                    continue
                j = i + b
                low = [k if k & b == 0 else LANES + k - b for k in range(LANES)]
                high = [k + b if k & b == 0 else LANES + k for k in range(LANES)]
                new[i] = builder.shuffle_vector(rows[i], rows[j],
                                                ir.Constant(ir.VectorType(i32, LANES), low))
                new[j] = builder.shuffle_vector(rows[i], rows[j],
                                                ir.Constant(ir.VectorType(i32, LANES), high))
            rows = new
        for k in range(LANES):
            at = builder.gep(dp, [builder.add(d0_, builder.mul(ir.Constant(i64, k), ldd_))])
            store = builder.store(rows[k], builder.bitcast(at, vptr))
            store.align = 4
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _prefetch_rows(flat, k_n, f0, r0, r1, k0, k1):  # pragma: no cover - compiled
    """Prefetches w2[f0 + r, k0:k1] for rows r in [r0, r1) (flat: w2's (F * K) floats)."""
    for r in range(r0, r1):
        base = (f0 + r) * k_n
        for i in range(base + k0, base + k1, LANES):
            prefetch(flat, i)
        prefetch(flat, base + k1 - 1)


@njit(inline="always")
def _load_chunk(w2, f0, nf, k0, k1, buf):  # pragma: no cover - compiled
    """buf[(k - k0) * 64 + f] = w2[f0 + f, k] for taps [k0, k1) and f < nf, zero for
    nf <= f < nf rounded up to 16 (w2: (F, K) C-contiguous)."""
    k_n = w2.shape[1]
    flat = w2.reshape(-1)
    whole = nf // LANES * LANES
    k = k0
    while k + LANES <= k1:
        for fs in range(0, whole, LANES):
            _transpose16(flat, (f0 + fs) * k_n + k, k_n, buf, (k - k0) * FILTERS + fs, FILTERS)
        k += LANES
    for kk in range(k, k1):
        for f in range(whole):
            buf[(kk - k0) * FILTERS + f] = w2[f0 + f, kk]
    if whole < nf:
        for kk in range(k0, k1):
            for f in range(whole, nf):
                buf[(kk - k0) * FILTERS + f] = w2[f0 + f, kk]
            for f in range(nf, -(-nf // LANES) * LANES):
                buf[(kk - k0) * FILTERS + f] = np.float32(0.0)


@njit(inline="always")
def _store(prod, t0, t1, out_nf, f0, nf, tmp, scale, bias, has_res, res_nf, relu,
           mask_nf):  # pragma: no cover - compiled
    """out_nf[f0 + f, p] = prod[(p - t0) * 64 + f] * scale + bias (+ res_nf[f0 + f, p]),
    rectified when ``relu``, for positions [t0, t1) and f < nf (out_nf, res_nf: one
    sample's (F, Ho * Wo)): transposed 16 x 16 into ``tmp`` (64 rows of t1 - t0), then a
    pass along each filter's row; ``mask_nf`` (one sample's (F, Ho * Wo) bool, or empty:
    none) gets out > 0 with a rectified value (training's ReLU gate)."""
    m = t1 - t0
    whole = m // LANES * LANES
    for fs in range(0, nf, LANES):
        for p in range(0, whole, LANES):
            _transpose16(prod, p * FILTERS + fs, FILTERS, tmp, fs * m + p, m)
    for p in range(whole, m):
        for f in range(nf):
            tmp[f * m + p] = prod[p * FILTERS + f]
    has_scale, has_bias = scale.size > 0, bias.size > 0
    size = np.uint64(m)
    for f in range(nf):
        fo = f0 + f
        s = scale[fo] if has_scale else np.float32(1.0)
        b = bias[fo] if has_bias else np.float32(0.0)
        src = tmp[f * m:(f + 1) * m]
        dst = out_nf[fo, t0:t1]
        if has_res:
            res = res_nf[fo, t0:t1]
            if relu:
                for p in range(size):
                    v = src[p] * s + b + res[p]
                    dst[p] = np.float32(0.0) if v <= 0 else v  # NaN passes
            else:
                for p in range(size):
                    dst[p] = src[p] * s + b + res[p]
        elif relu and mask_nf.size > 0:
            gate = mask_nf[fo, t0:t1]
            for p in range(size):
                v = src[p] * s + b
                dst[p] = np.float32(0.0) if v <= 0 else v  # NaN passes
                gate[p] = v > 0                            # NaN: False
        elif relu:
            for p in range(size):
                v = src[p] * s + b
                dst[p] = np.float32(0.0) if v <= 0 else v  # NaN passes
        elif has_scale or has_bias:
            for p in range(size):
                dst[p] = src[p] * s + b
        else:
            for p in range(size):
                dst[p] = src[p]


@njit(inline="always")
def _micro(vectors, most, src, xo, off, k0, k1, inb, b0, buf, prod, row0, add):
    # pragma: no cover - compiled
    """The register block of ``vectors`` 16-filter vectors (the narrowest that holds the
    block's filters), or, where that is more than ``most`` (:func:`block_vectors`), one
    block of 16 filters at a time: the same sums in the same order, so the same bits."""
    if vectors > most:
        for v in range(vectors):
            _micro1(src, xo, off, k0, k1, inb, b0, buf, prod, row0, add, v * LANES)
    elif vectors == 4:
        _micro4(src, xo, off, k0, k1, inb, b0, buf, prod, row0, add, 0)
    elif vectors == 3:
        _micro3(src, xo, off, k0, k1, inb, b0, buf, prod, row0, add, 0)
    elif vectors == 2:
        _micro2(src, xo, off, k0, k1, inb, b0, buf, prod, row0, add, 0)
    else:
        _micro1(src, xo, off, k0, k1, inb, b0, buf, prod, row0, add, 0)


@njit(inline="always")
def _group_source(x, g0, count, x_in, packed, padding, pitch):  # pragma: no cover - compiled
    """(array, offset) the taps of samples [g0, g0 + count) read: the samples packed
    (zero-padded) one after another into ``x_in`` when ``packed``, else x itself."""
    c_all, h, w = x.shape[1:]
    sample = c_all * pitch[0] * pitch[1]
    if packed:
        for s in range(count):
            pack_sample(x, g0 + s, x_in[s * sample:(s + 1) * sample], padding, (1, 1), pitch)
        return x_in, 0
    return x.reshape(-1), g0 * c_all * h * w


@njit(inline="always")
def _block(fb, per_group, fg, cg, plane, base):  # pragma: no cover - compiled
    """(first filter, filters, input offset, vectors) of filter block ``fb`` (numbered over
    the groups, ``per_group`` each)."""
    g = fb // per_group
    f0 = g * fg + (fb % per_group) * FILTERS
    nf = min(FILTERS, fg - (fb % per_group) * FILTERS)
    return f0, nf, base + g * cg * plane, -(-nf // LANES)


@njit(nogil=True, cache=True)
def forward_items(x, w2, groups, n0, n1, fb0, fb1, t0, t1, tile, group, off, inb, inb_g,
                  padding, pitch, packed, x_in, prod, buf, tmp, out, scale, bias, has_res,
                  residual, relu, mask, k_chunk, most, entered):  # pragma: no cover - compiled
    """out[n] for samples [n0, n1), filter blocks [fb0, fb1) (numbered over the groups,
    ceil(F/G / 64) each) and positions [t0, t1) (a multiple of 6 apart), ``tile``
    positions (a multiple of 6) at a time; or, with ``group`` > 1 (and every position),
    the whole maps of ``group`` samples at a time, one after another in one tile.

    x (N, C, H, W); w2 (F, C/G * KH * KW); off (K,) each tap's offset into one group's
    planes of ``pitch`` = (Hp, Wp) (the zero-padded sample, packed into ``x_in`` when
    ``packed``, else x itself); inb (Ho * Wo rounded up to 6,) each output position's
    offset (the tail repeats the last); inb_g (at least tile and inb's size,) scratch: the
    offsets the tile reads (inb's, or a group's); prod (tile * 64), buf (k_chunk * 64) and
    tmp (tile * 64) scratch; x_in (group * C * Hp * Wp) scratch when packed; out (N, F, Ho,
    Wo) gets ``sums * scale + bias (+ residual)``, rectified when ``relu`` (scale, bias:
    (F,) or empty; residual: out's shape, read when ``has_res``); ``mask`` (bool, out's
    shape flattened to (N, F, Ho * Wo), or empty (0, 0, 0)) gets out > 0 where ``relu``
    without a residual. ``most``: the most 16-filter vectors one register block takes
    (:func:`block_vectors`). ``entered`` (int64, one element or empty): raised to 1 as the
    kernel starts (block_threads.ENTERED)."""
    raise_flag(entered)
    c_all = x.shape[1]
    f_all, k_n = w2.shape
    cg, fg = c_all // groups, f_all // groups
    per_group = -(-fg // FILTERS)
    plane = pitch[0] * pitch[1]
    positions = out.shape[2] * out.shape[3]
    out_flat = out.reshape(out.shape[0], f_all, positions)
    res_flat = residual.reshape(residual.shape[0], residual.shape[1], -1)
    has_mask = mask.size > 0
    no_gate = mask.reshape(-1)[:0].reshape(0, 0)
    w2_flat = w2.reshape(-1)
    sample = c_all * plane        # one sample's (packed) planes
    for g0 in range(n0, n1, group):
        count = min(group, n1 - g0)
        src, base = _group_source(x, g0, count, x_in, packed, padding, pitch)
        if count == 1:
            inb_g[:inb.size] = inb
            lo, hi = t0, t1
        else:   # the samples' positions one after another, each offset by its sample
            total = count * positions
            for p in range(tile):
                q = min(p, total - 1)
                inb_g[p] = q // positions * sample + inb[q % positions]
            lo, hi = 0, -(-total // POSITIONS) * POSITIONS
        for ts in range(lo, hi, tile):
            te = min(hi, ts + tile)
            for fb in range(fb0, fb1):
                f0, nf, xo, vectors = _block(fb, per_group, fg, cg, plane, base)
                for k0 in range(0, k_n, k_chunk):
                    k1 = min(k_n, k0 + k_chunk)
                    _load_chunk(w2, f0, nf, k0, k1, buf)
                    add = 1 if k0 > 0 else 0
                    # the next chunk's weights, a share of its rows per position block, so
                    # they stream in from memory while these products run
                    if k1 < k_n:
                        pf0, pnf, pk0, pk1 = f0, nf, k1, min(k_n, k1 + k_chunk)
                    elif fb + 1 < fb1:
                        pf0, pnf, _x, _v = _block(fb + 1, per_group, fg, cg, plane, base)
                        pk0, pk1 = 0, min(k_n, k_chunk)
                    else:
                        pnf = 0
                    blocks = (te - ts) // POSITIONS
                    for b0 in range(ts, te, POSITIONS):
                        j = (b0 - ts) // POSITIONS
                        if pnf > 0:
                            _prefetch_rows(w2_flat, k_n, pf0, j * pnf // blocks,
                                           (j + 1) * pnf // blocks, pk0, pk1)
                        _micro(vectors, most, src, xo, off, k0, k1, inb_g, b0, buf, prod,
                               b0 - ts, add)
                for s in range(count):     # each sample's positions in this tile
                    a = max(ts, s * positions)
                    e = min(te, (s + 1) * positions)
                    if a < e:
                        n = g0 + s
                        _store(prod[(a - ts) * FILTERS:], a - s * positions, e - s * positions,
                               out_flat[n], f0, nf, tmp, scale, bias, has_res,
                               res_flat[n] if has_res else out_flat[n], relu,
                               mask[n] if has_mask else no_gate)


@njit(nogil=True, fastmath={"reassoc"}, cache=True)
def _gate_piece(dout, gate, n, f0, nf, a, e, chunk, gated, keep_gated,
                bias_acc):  # pragma: no cover - compiled
    """chunk[f, p - a] = dout[n, f0 + f, p] where gate[n, f0 + f, p], else 0 (a ReLU's
    backward: NaN where the gate is shut gives 0) for f < nf and positions [a, e), the
    same into ``gated`` when ``keep_gated``; bias_acc[f] += the row's sum in float64."""
    positions = dout.shape[2]
    src, keep, out = dout.reshape(-1), gate.reshape(-1), chunk.reshape(-1)
    also = gated.reshape(-1)
    width = chunk.shape[1]
    m = e - a
    for f in range(nf):
        base = (n * dout.shape[1] + f0 + f) * positions + a
        # row views: indices from 0 let LLVM drop numba's negative-index wraparound and
        # vectorise the loop (indexed from base + j it ran 4x slower)
        s_row, k_row = src[base:base + m], keep[base:base + m]
        o_row = out[f * width:f * width + m]
        total = 0.0
        # two loops, not one storing twice into o_row when the copy is not kept: rows that
        # may alias stop LLVM vectorising (the first layer's backward 3.0 -> 11.9 ms)
        if keep_gated:
            a_row = also[base:base + m]
            for j in range(m):
                v = s_row[j] if k_row[j] else np.float32(0.0)
                o_row[j] = v
                a_row[j] = v
                total += np.float64(v)
        else:
            for j in range(m):
                v = s_row[j] if k_row[j] else np.float32(0.0)
                o_row[j] = v
                total += np.float64(v)
        bias_acc[f] += total


@njit(nogil=True, cache=True)
def weight_grad_items(x, dout, groups, n0, n1, fb0, fb1, group, off, inb, inb_g, padding,
                      pitch, packed, x_in, buf, acc, p_chunk, gate, gated, gated_chunk,
                      bias_acc, most):  # pragma: no cover - compiled
    """acc[fb - fb0, k * 64 + f] += sum over samples [n0, n1) and positions p of
    dout[n, f0 + f, p] * x_pad[n, tap k at position p], for filter blocks [fb0, fb1)
    (numbered over the groups, ceil(F/G / 64) each; f0 the block's first filter): the
    forward's register block with the roles of taps and positions swapped (six taps
    broadcast from the input, 64 filters' gradients in the lanes, the sum over positions
    in the inner loop). Each (f, k) is a blocked float32 sum: each chunk of ``p_chunk``
    positions summed from zero with fused multiply-adds, then added to the total (one
    sequential sum over 10^5 positions lost 5-20x the accuracy of the direct kernel's dw).

    ``group`` samples at a time: their positions one after another (small maps: a block's
    partial sums, K x 64, then stay in L2 while all of them run). x (N, C, H, W); dout
    (N, F, P) C-contiguous; off (K rounded up to 6,) each tap's offset into one group's
    planes of ``pitch`` (the tail repeats the last tap: its rows are dropped); inb (P,)
    each output position's offset; inb_g (group * P,) scratch; x_in (group * C * Hp * Wp)
    scratch when ``packed``; buf (p_chunk * 64) scratch for a transposed chunk of dout;
    acc (fb1 - fb0, K rounded up to 6 * 64), added to (row fb - fb0 for block fb).

    With a ReLU gate (``gate`` (N, F, P) bool, not empty: the forward's fused ReLU), dout
    is read through it (dout where the gate is set, else 0: the ReLU's backward), each
    piece of a chunk gated into ``gated_chunk`` (64 x p_chunk scratch) before its
    transpose; ``bias_acc`` (fb1 - fb0, 64) float64 gets each filter's sum of the gated
    values (the bias gradient), and ``gated`` (dout's shape, or empty: not wanted) the
    gated values themselves (dx's input). dout is then read once for all three. ``most``
    as in :func:`forward_items`."""
    has_gate = gate.size > 0
    keep_gated = gated.size > 0
    c_all = x.shape[1]
    f_all, positions = dout.shape[1], dout.shape[2]
    cg, fg = c_all // groups, f_all // groups
    per_group = -(-fg // FILTERS)
    plane = pitch[0] * pitch[1]
    sample = c_all * plane
    k_rounded = off.size
    for g0 in range(n0, n1, group):
        count = min(group, n1 - g0)
        src, base = _group_source(x, g0, count, x_in, packed, padding, pitch)
        total = count * positions
        for p in range(total):
            inb_g[p] = p // positions * sample + inb[p % positions]
        for fb in range(fb0, fb1):
            f0, nf, xo, vectors = _block(fb, per_group, fg, cg, plane, base)
            acc_fb = acc[fb - fb0]
            for p0 in range(0, total, p_chunk):
                p1 = min(total, p0 + p_chunk)
                q = p0
                while q < p1:       # the chunk's pieces, one per sample, transposed
                    s = q // positions
                    a = q - s * positions
                    e = min(positions, a + p1 - q)
                    n = g0 + s
                    if has_gate:
                        _gate_piece(dout, gate, n, f0, nf, a, e, gated_chunk, gated,
                                    keep_gated, bias_acc[fb - fb0])
                        _load_chunk(gated_chunk, 0, nf, 0, e - a, buf[(q - p0) * FILTERS:])
                    else:
                        _load_chunk(dout[n], f0, nf, a, e, buf[(q - p0) * FILTERS:])
                    q += e - a
                for t0 in range(0, k_rounded, POSITIONS):
                    _micro(vectors, most, src, xo, inb_g, p0, p1, off, t0, buf, acc_fb, t0, 2)
