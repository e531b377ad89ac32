"""The kernels of the direct float32 convolution (``direct.py``): register-blocked products,
no unrolled columns.

The identity behind it: lay each sample's zero-padded input out as planes of row pitch R
(for stride s, the s x s polyphase planes ``x_pad[c, a::s, b::s]``, so every tap reads with
step 1), and number the outputs ``q = oh * R + ow`` on that pitch. Then every output reads
tap ``k = (c, i, j)`` at the same offset from its own number:

    out[f, q] = sum_k w[f, k] * x_in[off[k] + q]

so the products need no unrolled copy at all: the input is read in place, one contiguous
run of 32 floats per tap. Positions with ``ow >= W_out`` (the pitch's padding columns) are
computed and dropped, the price of reading every tap contiguously (11% of a 32x32 layer,
22% of a 7x7 one).

The micro-kernel (:func:`_micro`) keeps an 8-filter x 32-output block in sixteen 16-float
registers through the whole sum over taps: per tap, two unaligned loads of 32 inputs, eight
broadcast weights and sixteen fused multiply-adds; it is written as LLVM vector IR (a numba
intrinsic) because numba's loops do not keep accumulators in registers (the same loop in
plain numba ran at 10 GFLOP/s, this one at ~200 on one Sapphire Rapids core). At a map's
edges narrower blocks take over (16 outputs; 6 or 4 filters), so small maps and filter counts
that are not multiples of 8 do not pay for zeros (LeNet: benchmarks/README.md, section 44).
Each sum over taps runs in one order in float32 (fused multiply-adds): the error class of
im2col's GEMM, not Winograd's, so a training forward may use it (benchmarks/README.md,
section 33).

The weight gradient is the transposed sum, ``dw[f, k] = sum_q dout[f, q] * x_in[off[k] +
q]`` with dout laid on the same numbering (zero at the dropped positions):
:func:`_grad_micro` keeps 4 filters x 6 taps of 16-lane partial sums in registers while it
runs along q; lanes are summed and samples added in float64 every few samples.

One call (:func:`forward_samples`, :func:`weight_grad_samples`) does, per sample: pack
(pad, and split into phases), the register blocks for every group, and the store (forward:
to NCHW with scale, bias and ReLU); it releases the GIL, so ``direct.py`` runs samples on
block threads. No ``fastmath``: the ReLU must see NaN as it is (NaN passes, as
through ``np.maximum(x, 0)`` and ``compiled/activation.py``'s bias pass).

The 16-float vectors are AVX-512 registers. A CPU without AVX-512 (AVX2: 16 registers of
8 floats; ``intrinsics.wide_vectors``) runs narrower blocks with the same sums in the same
order, so the same bits: 4 or 6 filters x 16 outputs forward (8-12 registers), 2 filters
x 3 taps for dw; the wide blocks' 32 and 48 registers' worth spilled on every tap there.
llvmlite is numba's own dependency.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from volnet.runtime.spin_wait import raise_flag

FILTERS = 8          # filters per register block (one broadcast weight each)
VECTORS = 2          # 16-float vectors of outputs per register block
PIXELS = 16 * VECTORS


def _micro_kernel(filters: int, vectors: int, row: int = FILTERS):
    """The register block as a numba intrinsic:
    ``_micro(x_in, off, wp, out, k0, k1, q, f0, ldo, add)`` sets
    ``out[f0 + f, q + p] (+)= sum_{k0 <= k < k1} wp[k, f] * x_in[off[k] + q + p]`` for
    f < filters, p < 16 * vectors (flat indices: wp (K, row), the first ``filters`` of each
    row used; out's rows ldo apart; ``add`` nonzero: add to what out holds)."""

    @intrinsic
    def micro(typingctx, x_in, off, wp, out, k0, k1, q, f0, ldo, add):
        sig = types.void(x_in, off, wp, out, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.intp)

        def codegen(context, builder, signature, args):
            x_arg, off_arg, wp_arg, out_arg, k0_, k1_, q_, f0_, ldo_, add_ = args

            def data(ty, val):
                return context.make_array(ty)(context, builder, val).data

            xp, offp = data(signature.args[0], x_arg), data(signature.args[1], off_arg)
            wpp, outp = data(signature.args[2], wp_arg), data(signature.args[3], out_arg)
            f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
            vec = ir.VectorType(f32, 16)
            vptr = vec.as_pointer()
            zero = ir.Constant(vec, [0.0] * 16)
            splat = ir.Constant(ir.VectorType(i32, 16), [0] * 16)
            # accumulators in allocas: LLVM's mem2reg turns them into registers
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
                    for _ in range(filters)]
            rows = [builder.gep(outp, [builder.add(
                builder.mul(builder.add(f0_, ir.Constant(i64, f)), ldo_), q_)])
                for f in range(filters)]
            with builder.if_then(builder.icmp_signed("!=", add_, ir.Constant(i64, 0))):
                for f in range(filters):
                    for v in range(vectors):
                        load = builder.load(builder.bitcast(
                            builder.gep(rows[f], [ir.Constant(i64, 16 * v)]), vptr))
                        load.align = 4
                        builder.store(load, accs[f][v])
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.fma.v16f32")
            x_base = builder.gep(xp, [q_])
            with cgutils.for_range_slice(builder, k0_, k1_, ir.Constant(i64, 1)) as (k, _):
                src = builder.gep(x_base, [builder.load(builder.gep(offp, [k]))])
                xs = []
                for v in range(vectors):
                    load = builder.load(builder.bitcast(
                        builder.gep(src, [ir.Constant(i64, 16 * v)]), vptr))
                    load.align = 4
                    xs.append(load)
                w_row = builder.gep(wpp, [builder.mul(k, ir.Constant(i64, row))])
                for f in range(filters):
                    one = builder.load(builder.gep(w_row, [ir.Constant(i64, f)]))
                    wv = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vec, None), one, ir.Constant(i32, 0)),
                        ir.Constant(vec, None), splat)
                    for v in range(vectors):
                        acc = accs[f][v]
                        builder.store(builder.call(fma, [wv, xs[v], builder.load(acc)]), acc)
            for f in range(filters):
                for v in range(vectors):
                    store = builder.store(builder.load(accs[f][v]), builder.bitcast(
                        builder.gep(rows[f], [ir.Constant(i64, 16 * v)]), vptr))
                    store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return micro


# The full block, and narrower ones for the edges (see _products): 16 outputs for a map
# whose numbers end 16 short of a whole block, 6 or 4 filters for a last filter block that
# holds no more (LeNet's 6 filters, dx of its 6 channels, a 12-filter layer's second block):
# their sums cost fewer multiply-adds per tap, not zeros computed and dropped
_micro = _micro_kernel(FILTERS, VECTORS)
_micro_q16 = _micro_kernel(FILTERS, 1)
_micro_f6 = _micro_kernel(6, VECTORS)
_micro_f6_q16 = _micro_kernel(6, 1)
_micro_f4 = _micro_kernel(4, VECTORS)
_micro_f4_q16 = _micro_kernel(4, 1)

GRAD_FILTERS = 4     # dw register block: 4 filters x 6 taps of 16-float partial sums (4x4,
GRAD_TAPS = 6        # 6x4, 8x3, 3x8, 2x12 measured: 4x6 best, benchmarks/README.md)


def _grad_micro_kernel(filters: int, taps: int):
    """The weight gradient's register block as a numba intrinsic:
    ``_grad_micro(x_in, off, d_in, part, k0, f0, q0, q1, ldd, ldk, add)`` sets
    ``part[f0 + f, k0 + t, l] (+)= sum_{q = l mod 16, q0 <= q < q1} d_in[f0 + f, q] *
    x_in[off[k0 + t] + q]`` for f < filters, t < taps, lanes l < 16 (flat indices: d_in's
    rows ldd apart, part (Fpad, ldk, 16); ``add`` nonzero: add to what part holds).
    Sixteen lanes of partial sums, so the loop over outputs is all vector FMAs."""

    @intrinsic
    def grad_micro(typingctx, x_in, off, d_in, part, k0, f0, q0, q1, ldd, ldk, add):
        sig = types.void(x_in, off, d_in, part, types.intp, types.intp, types.intp,
                         types.intp, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            x_arg, off_arg, d_arg, part_arg, k0_, f0_, q0_, q1_, ldd_, ldk_, add_ = args

            def data(ty, val):
                return context.make_array(ty)(context, builder, val).data

            xp, offp = data(signature.args[0], x_arg), data(signature.args[1], off_arg)
            dp, pp = data(signature.args[2], d_arg), data(signature.args[3], part_arg)
            f32, i64 = ir.FloatType(), ir.IntType(64)
            vec = ir.VectorType(f32, 16)
            vptr = vec.as_pointer()
            zero = ir.Constant(vec, [0.0] * 16)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(taps)]
                    for _ in range(filters)]
            cells = [[builder.bitcast(builder.gep(pp, [builder.mul(builder.add(
                builder.mul(builder.add(f0_, ir.Constant(i64, f)), ldk_),
                builder.add(k0_, ir.Constant(i64, t))), ir.Constant(i64, 16))]), vptr)
                for t in range(taps)] for f in range(filters)]
            with builder.if_then(builder.icmp_signed("!=", add_, ir.Constant(i64, 0))):
                for f in range(filters):
                    for t in range(taps):
                        load = builder.load(cells[f][t])
                        load.align = 4
                        builder.store(load, accs[f][t])
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec, vec, vec]), "llvm.fma.v16f32")
            x_rows = [builder.gep(xp, [builder.load(builder.gep(
                offp, [builder.add(k0_, ir.Constant(i64, t))]))]) for t in range(taps)]
            d_rows = [builder.gep(dp, [builder.mul(builder.add(f0_, ir.Constant(i64, f)), ldd_)])
                      for f in range(filters)]
            with cgutils.for_range_slice(builder, q0_, q1_, ir.Constant(i64, 16)) as (q, _):
                xs, ds = [], []
                for rows, vals in ((x_rows, xs), (d_rows, ds)):
                    for row in rows:
                        load = builder.load(builder.bitcast(builder.gep(row, [q]), vptr))
                        load.align = 4
                        vals.append(load)
                for f in range(filters):
                    for t in range(taps):
                        acc = accs[f][t]
                        builder.store(builder.call(fma, [ds[f], xs[t], builder.load(acc)]), acc)
            for f in range(filters):
                for t in range(taps):
                    store = builder.store(builder.load(accs[f][t]), cells[f][t])
                    store.align = 4
            return context.get_dummy_value()

        return sig, codegen

    return grad_micro


_grad_micro = _grad_micro_kernel(GRAD_FILTERS, GRAD_TAPS)
_grad_micro_narrow = _grad_micro_kernel(2, 3)   # without AVX-512: 6 of the block's 24 sums


@njit(inline="always")
def pack_sample(x, n, x_in, padding, stride, pitch):  # pragma: no cover - compiled
    """x_in = sample n of x zero-padded and split into its stride x stride phase planes of
    size ``pitch`` (plane (c, a, b) holds x_pad[c, a::sh, b::sw]); zero tail."""
    n_ch, h, w = x.shape[1:]
    ph, pw = padding
    sh, sw = stride
    hq, wq = pitch
    plane = hq * wq
    x_in[:] = 0.0
    for c in range(n_ch):
        for a in range(sh):
            for b in range(sw):
                base = ((c * sh + a) * sw + b) * plane
                # columns t with 0 <= t*sw + b - pw < w
                t_lo = 0
                while t_lo < wq and t_lo * sw + b - pw < 0:
                    t_lo += 1
                t_hi = wq
                while t_hi > t_lo and (t_hi - 1) * sw + b - pw >= w:
                    t_hi -= 1
                for r in range(hq):
                    src_r = r * sh + a - ph
                    if src_r < 0 or src_r >= h:
                        continue
                    row = x[n, c, src_r]
                    dst = base + r * wq
                    if sw == 1:     # unsigned indices: no negative-index check, a plain copy
                        start, first = np.uint64(dst + t_lo), np.uint64(t_lo + b - pw)
                        for t in range(np.uint64(t_hi - t_lo)):
                            x_in[start + t] = row[first + t]
                    else:
                        start, first = np.uint64(dst + t_lo), np.uint64(t_lo * sw + b - pw)
                        step = np.uint64(sw)
                        for t in range(np.uint64(t_hi - t_lo)):
                            x_in[start + t] = row[first + t * step]


@njit(inline="always")
def _block(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, width, whole, add,
           narrow):  # pragma: no cover - compiled
    """One register block: filters [f0, f0 + width) of the filter block ``wpb`` (K,
    FILTERS), outputs [q, q + 32) (``whole``) or [q, q + 16), taps [k0, k1) (none: zeros
    stored, unless ``add``), by the narrowest micro kernel that holds ``width`` filters.
    ``narrow`` (a CPU with 16 vector registers, intrinsics.wide_vectors): 16 outputs of
    at most 6 filters at a time (12 registers of 8 floats; the full block's 32 would
    spill on every tap); each output's sum is the same, in the same order."""
    if narrow:
        for h in range(0, 2 if whole else 1):
            s = 0
            while s < width:
                if 4 < width - s <= 6:
                    _micro_f6_q16(x_in, off, wpb[:, s:], prod, k0, k1, q + 16 * h, f0 + s,
                                  q_pad, add)
                    s += 6
                else:
                    _micro_f4_q16(x_in, off, wpb[:, s:], prod, k0, k1, q + 16 * h, f0 + s,
                                  q_pad, add)
                    s += 4
    elif width > 6:
        if whole:
            _micro(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)
        else:
            _micro_q16(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)
    elif width > 4:
        if whole:
            _micro_f6(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)
        else:
            _micro_f6_q16(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)
    elif whole:
        _micro_f4(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)
    else:
        _micro_f4_q16(x_in, off, wpb, prod, k0, k1, q, f0, q_pad, add)


@njit(inline="always")
def _tap_spans(q_end, wq, ho, row_taps, row_lo, row_hi):  # pragma: no cover - compiled
    """(blocks, 2): [k_lo, k_hi) of each 32-output block [q, q + 32) below ``q_end``, the
    taps that read any real input there: taps are in runs of ``row_taps`` (filter rows),
    run i reading real inputs for output rows [row_lo[i], row_hi[i]] only (rows of padding
    are zeros: their products are skipped, not summed). The same for every sample."""
    spans = np.zeros((-(-q_end // PIXELS), 2), np.int64)
    for b in range(spans.shape[0]):
        q = b * PIXELS
        oh0 = q // wq
        oh1 = min(ho - 1, (min(q_end, q + PIXELS) - 1) // wq)
        first, last = row_lo.size, -1
        for i in range(row_lo.size):
            if row_lo[i] <= oh1 and row_hi[i] >= oh0:
                first = min(first, i)
                last = i
        if first <= last:
            spans[b, 0], spans[b, 1] = first * row_taps, (last + 1) * row_taps
    return spans


@njit(inline="always")
def _products(x_in, off, wp, prod, fb0, fb1, k_chunk, q_tile, q_end, fg, spans,
              narrow):  # pragma: no cover - compiled
    """prod (Fpad, Qr) = the sums over taps for output numbers [0, q_end) (a multiple of
    16), in register blocks, for filter blocks [fb0, fb1) of wp (Fpad / FILTERS, K,
    FILTERS), of which the first ``fg`` filters are real. Outputs ``q_tile`` at a time
    (their partial sums and the input rows they read stay in L2), taps ``k_chunk`` at a
    time (the inputs a block of outputs reads stay in L1 while every filter block uses
    them). A map whose numbers end 16 short of a whole 32-output block ends with a
    16-output block (LeNet conv2's 10x10 outputs on pitch 14: 144 numbers computed, not
    160), and a last filter block of at most 6 or 4 real filters sums only those (rows of
    prod beyond ``fg`` are left as they are: nothing reads them). Each block sums only its
    ``spans`` (:func:`_tap_spans`: LeNet conv2's dx, a correlation of 10x10 maps padded by
    4, reads zeros for half its products otherwise)."""
    k_n = off.size
    q_pad = prod.shape[1]
    for t0 in range(0, q_end, q_tile):
        t1 = min(q_end, t0 + q_tile)
        for k0 in range(0, k_n, k_chunk):
            k1 = min(k_n, k0 + k_chunk)
            for q in range(t0, t1, PIXELS):
                whole = t1 - q >= PIXELS
                blk = q // PIXELS
                a, b = max(k0, spans[blk, 0]), min(k1, spans[blk, 1])
                if k0 == 0:         # the first pass sets the block (zeros if no tap is here)
                    b = max(a, b)
                    add = 0
                elif a < b:
                    add = 1
                else:
                    continue
                for fb in range(fb0, fb1):
                    _block(x_in, off, wp[fb], prod, a, b, q, fb * FILTERS, q_pad,
                           min(FILTERS, fg - fb * FILTERS), whole, add, narrow)


@njit(nogil=True, cache=True)
def forward_samples(x, n0, n1, fb0, fb1, wp, off, x_in, prod, out, scale, bias, relu, mask,
                    padding, stride, pitch, k_chunk, q_tile, row_taps, row_lo,
                    row_hi, narrow, entered):  # pragma: no cover - compiled
    """out[n] for samples n in [n0, n1) and each group's filter blocks [fb0, fb1): pack,
    products per group, store.

    x (N, C, H, W); wp (G, Fpad / FILTERS, K, FILTERS) packed filters, taps ordered filter
    row first (``row_taps`` a row: (KH, C/G, KW)); off (G, K) their offsets into one
    sample's packed input ``x_in`` (C * sh * sw planes of ``pitch`` = (Hq, Wq), zero tail);
    row_lo, row_hi (KH,): the output rows for which each filter row reads real inputs;
    prod (Fpad, Qr) scratch; out (N, F, Ho, Wo) gets ``prod * scale + bias`` (scale, bias:
    (F,) or empty), rectified when ``relu``; then ``mask`` (bool, out's shape, or empty:
    none) gets out > 0 (the ReLU's gradient gate, written with the value, not by a pass
    over out). ``entered`` (int64, one element or empty): raised to 1 as the kernel starts
    (block_threads.ENTERED).
    """
    raise_flag(entered)
    groups = wp.shape[0]
    f_all, ho, wo = out.shape[1:]
    fg = f_all // groups
    wq = pitch[1]
    has_scale, has_bias, has_mask = scale.size > 0, bias.size > 0, mask.size > 0
    # numbers up to the last output's, rounded up to 16
    q_end = min(prod.shape[1], -(-((ho - 1) * wq + wo) // 16) * 16)
    spans = _tap_spans(q_end, wq, ho, row_taps, row_lo, row_hi)
    for n in range(n0, n1):
        pack_sample(x, n, x_in, padding, stride, pitch)
        for g in range(groups):
            _products(x_in, off[g], wp[g], prod, fb0, fb1, k_chunk, q_tile, q_end, fg, spans,
                      narrow)
            for f in range(fb0 * FILTERS, min(fg, fb1 * FILTERS)):
                fo = g * fg + f
                s = scale[fo] if has_scale else np.float32(1.0)
                bb = bias[fo] if has_bias else np.float32(0.0)
                src = prod[f]
                for oh in range(ho):
                    dst = out[n, fo, oh]
                    at = np.uint64(oh * wq)     # unsigned: no negative-index checks
                    if relu and has_mask:
                        gate = mask[n, fo, oh]
                        for ow in range(np.uint64(wo)):
                            v = src[at + ow] * s + bb
                            dst[ow] = np.float32(0.0) if v <= 0 else v  # NaN passes
                            gate[ow] = v > 0                            # NaN: False
                    elif relu:
                        for ow in range(np.uint64(wo)):
                            v = src[at + ow] * s + bb
                            dst[ow] = np.float32(0.0) if v <= 0 else v  # NaN passes
                    elif has_scale or has_bias:
                        for ow in range(np.uint64(wo)):
                            dst[ow] = src[at + ow] * s + bb
                    else:
                        for ow in range(np.uint64(wo)):
                            dst[ow] = src[at + ow]


@njit(nogil=True, cache=True)
def weight_grad_samples(x, dout, n0, n1, off, x_in, d_in, part, total, padding, stride, pitch,
                        flush, q_tile, narrow, entered):  # pragma: no cover - compiled
    """total (G, Fpad, Kpad) += dw of samples [n0, n1), in float64.

    off (G, Kpad) tap offsets (padded with repeats of a valid one); x_in one packed
    sample (as forward); d_in (G, Fpad, Qr) scratch: dout on the same output numbering,
    zero at the pitch's padding columns and beyond, so their inputs count for nothing;
    part (G, Fpad, Kpad, 16) float32 lanes, added into ``total`` every ``flush`` samples
    (each lane sums at most flush * Qr / 16 products in float32). Outputs ``q_tile`` at a
    time, so the input rows and output gradients of a tile stay in L2. ``entered`` as in
    :func:`forward_samples`.
    """
    raise_flag(entered)
    groups, f_pad, q_pad = d_in.shape
    k_pad = off.shape[1]
    f_all, ho, wo = dout.shape[1:]
    fg = f_all // groups
    wq = pitch[1]
    for n in range(n0, n1):
        pack_sample(x, n, x_in, padding, stride, pitch)
        d_in[:] = 0.0
        for g in range(groups):
            for f in range(fg):
                for oh in range(ho):
                    src, dst = dout[n, g * fg + f, oh], d_in[g, f, oh * wq:oh * wq + wo]
                    for ow in range(np.uint64(wo)):
                        dst[ow] = src[ow]
        for t0 in range(0, q_pad, q_tile):
            add = 0 if (n - n0) % flush == 0 and t0 == 0 else 1
            t1 = min(q_pad, t0 + q_tile)
            for g in range(groups):
                for fb in range(0, f_pad, GRAD_FILTERS):
                    for kb in range(0, k_pad, GRAD_TAPS):
                        if narrow:   # 2 x 3 of the block at a time (12 registers of 8)
                            for fs in range(0, GRAD_FILTERS, 2):
                                for ks in range(0, GRAD_TAPS, 3):
                                    _grad_micro_narrow(x_in, off[g], d_in[g], part[g], kb + ks,
                                                       fb + fs, t0, t1, q_pad, k_pad, add)
                        else:
                            _grad_micro(x_in, off[g], d_in[g], part[g], kb, fb, t0, t1,
                                        q_pad, k_pad, add)
        if (n - n0) % flush == flush - 1 or n == n1 - 1:
            for g in range(groups):
                for f in range(f_pad):
                    for k in range(k_pad):
                        acc = 0.0
                        for lane in range(16):
                            acc += part[g, f, k, lane]
                        total[g, f, k] += acc
