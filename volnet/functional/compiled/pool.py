"""Max pooling in one pass each way: the forward records each window's winner (flat
index into its H x W plane, int32), the backward scatters the gradient there; the window
maxima alone (:func:`max_values` and its two special cases: max pooling at inference) and
the window sums (:func:`window_sums`: average pooling's forward).

Planes (N*C of them) are split among threads, so overlapping windows never race.
Padding is never materialised: windows are clipped to the plane (padding counts as
-infinity, as in PyTorch). Ties go to the first maximum in row-major window order,
as in PyTorch's CPU kernel. A window holding NaN outputs NaN (PyTorch routes the
gradient to its last NaN, this kernel to one of them).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from volnet.functional.compiled.intrinsics import (
    array_data,
    lane_mask,
    masked_load,
    masked_store,
    splat,
)
from volnet.runtime.launch import kernel


@njit(cache=True)
def _column_max(plane, r0, r1, colmax, colrow):
    """Max of each column over rows r0..r1-1 and the first row holding it (selects,
    not branches: the inner loop vectorises)."""
    row = plane[r0]
    for c in range(colmax.shape[0]):
        colmax[c] = row[c]
        colrow[c] = r0
    for r in range(r0 + 1, r1):
        row = plane[r]
        for c in range(colmax.shape[0]):
            v = row[c]
            m = colmax[c]
            take = (v > m) | np.isnan(v)
            colmax[c] = v if take else m
            colrow[c] = r if take else colrow[c]


@kernel
def max_forward(x, kh, kw, sh, sw, ph, pw, out, arg, keep):
    """x (P, H, W) -> out (P, Ho, Wo); arg (P, Ho, Wo) int32 winners when ``keep``.

    Per output row: column maxima over the window's rows (with the first row of each),
    then the maximum over each window's columns, ties broken by (row, column): the
    first maximum in row-major order.
    """
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    for p in prange(planes):
        plane = x[p]
        colmax = np.empty(w, dtype=x.dtype)
        colrow = np.empty(w, dtype=np.int64)
        for i in range(ho):
            r0 = i * sh - ph
            r1 = min(r0 + kh, h)
            r0 = max(r0, 0)
            _column_max(plane, r0, r1, colmax, colrow)
            orow = out[p, i]
            for j in range(wo):
                c0 = j * sw - pw
                c1 = min(c0 + kw, w)
                c0 = max(c0, 0)
                best = colmax[c0]
                br = colrow[c0]
                bc = c0
                for c in range(c0 + 1, c1):
                    v = colmax[c]
                    rr = colrow[c]
                    take = (v > best) | ((v == best) & (rr < br)) | np.isnan(v)
                    best = v if take else best
                    br = rr if take else br
                    bc = c if take else bc
                orow[j] = best
                if keep:
                    arg[p, i, j] = br * w + bc


@njit(cache=True, inline="always")
def _nanmax(m, v):
    """max(m, v) with NaN winning, m the running maximum (a select, not a branch: loops of
    it vectorise; once m is NaN it stays NaN)."""
    return v if (v > m) | np.isnan(v) else m


@njit(cache=True)
def _add_into(dst, src, n):
    """dst[:n] += src[:n]."""
    for m in range(n):
        dst[m] += src[m]


@njit(cache=True)
def _window_cols(src, dst, kw, sw, n, tmp):
    """dst[j] = sum of src[j*sw + k] over k < kw, for j < n: one pass per tap over dst.
    Strides 1 and 2 are written out, so LLVM sees a constant stride and vectorises the
    loads (a stride it only knew at run time left 168 scalar loads per 56-wide row: 0.29 ms
    on ResNet's stem against 0.10); other strides take running sums over the contiguous
    columns, then every sw-th of them."""
    if sw == 1:
        for j in range(n):
            dst[j] = src[j]
        for k in range(1, kw):
            _add_into(dst, src[k:], n)
    elif sw == 2:
        for j in range(n):
            dst[j] = src[2 * j]
        for k in range(1, kw):
            for j in range(n):
                dst[j] += src[2 * j + k]
    else:
        m = (n - 1) * sw + 1
        for c in range(m):
            tmp[c] = src[c]
        for k in range(1, kw):
            _add_into(tmp, src[k:], m)
        for j in range(n):
            dst[j] = tmp[j * sw]


ROW_MIN = 64    # padded width from which window_sums works row by row (see there)
GROUP = 2048    # elements of padded planes that window_sums' flat passes take at once


@kernel
def window_sums(x, kh, kw, sh, sw, ph, pw, out):
    """x (P, H, W) -> out (P, Ho, Wo): each window's sum (average pooling divides it).

    The input is padded with zeros; the bottom and right padding also covers ceil_mode's
    partial windows. The sums over each window's rows come first, then over its columns
    (:func:`_window_cols`), every pass a loop of adds that vectorises. Wide planes
    (``ROW_MIN``) go row by row: the rows of one output row into a padded row, then its
    columns. Narrow ones (Inception's 28x28 .. 7x7) would spend their time starting short
    loops (832x7x7: 0.19 ms), so groups of them (``GROUP`` elements) are copied into one
    scratch array of padded planes, one under the other, and each pass is one loop over
    all of it: rows[m] = sum over r of xp[m + r * wp] (every padded row of every plane:
    those that start no window are computed and never read), then the column pass over
    rows as one row (wp is a multiple of sw, so output row i of plane p starts at
    (p * hp * wp + i * sh * wp) / sw). Scratch is allocated once per block of planes.
    """
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    wp = max(w + 2 * pw, (wo - 1) * sw + kw)
    hp = max(h + 2 * ph, (ho - 1) * sh + kh)
    rowwise = wp >= ROW_MIN
    if not rowwise:
        wp += -wp % sw                  # every row starts at a multiple of sw
    size = hp * wp
    group = 1 if rowwise else max(1, GROUP // size)
    blocks = min(planes, 16)
    for b in prange(blocks):
        lo, hi = b * planes // blocks, (b + 1) * planes // blocks
        tmp = np.empty(wp if rowwise else group * size + wp, dtype=x.dtype)   # other strides
        if rowwise:
            col = np.zeros(wp, dtype=x.dtype)
            inner = col[pw:pw + w]      # a view: an offset index (col[pw + c]) kept the
            #                             loops below from vectorising (0.75 ms -> 0.38)
            for p in range(lo, hi):
                plane = x[p]
                oplane = out[p]
                for i in range(ho):
                    r0 = max(i * sh - ph, 0)
                    r1 = min(i * sh - ph + kh, h)
                    first = plane[r0]
                    for c in range(w):
                        inner[c] = first[c]
                    for r in range(r0 + 1, r1):
                        _add_into(inner, plane[r], w)
                    _window_cols(col, oplane[i], kw, sw, wo, tmp)
            continue
        xp = np.zeros(group * size + kh * wp, dtype=x.dtype)
        rows = np.zeros(group * size + wp, dtype=x.dtype)
        cols = np.empty(group * size // sw, dtype=x.dtype)
        for g in range(lo, hi, group):
            count = min(group, hi - g)
            for p in range(count):
                plane = x[g + p]
                for r in range(h):
                    dst = xp[p * size + (r + ph) * wp + pw:]
                    src = plane[r]
                    for c in range(w):
                        dst[c] = src[c]
            n = count * size
            for m in range(n):
                rows[m] = xp[m]
            for k in range(1, kh):
                _add_into(rows, xp[k * wp:], n)
            _window_cols(rows, cols, kw, sw, n // sw, tmp)
            for p in range(count):
                oplane = out[g + p]
                for i in range(ho):
                    src = cols[(p * size + i * sh * wp) // sw:]
                    orow = oplane[i]
                    for j in range(wo):
                        orow[j] = src[j]


LANES = 16          # windows per vector step of max_forward_2x2 (float32: one AVX-512 register)


@intrinsic
def _windows_2x2(typingctx, x, top, bottom, valid, out, oo, arg, ao, base, keep):
    """``_windows_2x2(x, top, bottom, valid, out, oo, arg, ao, base, keep)`` (x and out
    float32, or both float64; arg int32): the 2x2 windows q < ``valid`` (1 to 16) whose
    rows start at x[top + 2q] and x[bottom + 2q] (flat indices): out[oo + q] = the window's maximum and, when ``keep`` is nonzero,
    arg[ao + q] = base + its winner's offset (0, 1, W or W + 1, with W = bottom - top; base:
    the top row's index in the plane plus 2q). The comparisons of :func:`max_forward`, in
    its order, sixteen windows at a time: column maxima over the two rows (the top one kept
    unless beaten or the bottom is NaN), then across the two columns (ties to the top row,
    NaN taken). Two masked loads per row of the 2 x ``valid`` values, split into even and
    odd columns; nothing past them is read or written."""
    sig = types.void(x, types.intp, types.intp, types.intp, out, types.intp, arg, types.intp,
                     types.intp, types.intp)

    def codegen(context, builder, signature, args):
        x_arg, top_, bottom_, valid_, out_arg, oo_, arg_arg, ao_, base_, keep_ = args
        sa = signature.args
        xp = array_data(context, builder, sa[0], x_arg)
        op = array_data(context, builder, sa[4], out_arg)
        ap = array_data(context, builder, sa[6], arg_arg)
        wide = sa[0].dtype == types.float64
        real = ir.DoubleType() if wide else ir.FloatType()
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vec, ivec = ir.VectorType(real, LANES), ir.VectorType(i32, LANES)
        vptr, iptr = vec.as_pointer(), ivec.as_pointer()
        c = lambda v: ir.Constant(i64, v)
        four, align = ir.Constant(i32, 4), ir.Constant(i32, 8 if wide else 4)
        mload, mstore = masked_load(builder, vec), masked_store(builder, vec)
        istore = masked_store(builder, ivec)

        pairs = builder.mul(valid_, c(2))
        low, high = lane_mask(builder, pairs), lane_mask(builder, builder.sub(pairs, c(LANES)))
        undef = ir.Constant(vec, None)
        even = ir.Constant(ir.VectorType(i32, LANES), list(range(0, 2 * LANES, 2)))
        odd = ir.Constant(ir.VectorType(i32, LANES), list(range(1, 2 * LANES, 2)))

        def row(start):     # (even columns, odd columns) of the 2 x valid values from start
            at = builder.gep(xp, [start])
            first = builder.call(mload, [builder.bitcast(at, vptr), align, low, undef])
            second = builder.call(mload, [builder.bitcast(builder.gep(at, [c(LANES)]), vptr),
                                          align, high, undef])
            return (builder.shuffle_vector(first, second, even),
                    builder.shuffle_vector(first, second, odd))

        a, b = row(top_)
        cc, d = row(bottom_)
        nan = lambda v: builder.fcmp_unordered("uno", v, v)
        t0 = builder.or_(builder.fcmp_ordered(">", cc, a), nan(cc))
        t1 = builder.or_(builder.fcmp_ordered(">", d, b), nan(d))
        m0, m1 = builder.select(t0, cc, a), builder.select(t1, d, b)
        # ties across the columns go to the top row: the right column wins a tie only from
        # the top row against the left one's bottom
        take = builder.or_(builder.or_(
            builder.fcmp_ordered(">", m1, m0),
            builder.and_(builder.fcmp_ordered("==", m1, m0),
                         builder.and_(builder.not_(t1), t0))), nan(m1))
        keep_mask = lane_mask(builder, valid_)
        builder.call(mstore, [builder.select(take, m1, m0),
                              builder.bitcast(builder.gep(op, [oo_]), vptr), align, keep_mask])
        with builder.if_then(builder.icmp_signed("!=", keep_, c(0))):
            width = builder.trunc(builder.sub(bottom_, top_), i32)
            zeros = ir.Constant(ivec, [0] * LANES)
            r0 = builder.select(t0, splat(builder, width, ivec), zeros)
            r1 = builder.select(t1, splat(builder, width, ivec), zeros)
            lanes = builder.add(splat(builder, builder.trunc(base_, i32), ivec),
                                ir.Constant(ivec, list(range(0, 2 * LANES, 2))))
            winner = builder.add(lanes, builder.select(
                take, builder.add(r1, ir.Constant(ivec, [1] * LANES)), r0))
            builder.call(istore, [winner, builder.bitcast(builder.gep(ap, [ao_]), iptr), four,
                                  keep_mask])
        return context.get_dummy_value()

    return sig, codegen


@kernel
def max_forward_2x2(x, out, arg, keep):
    """:func:`max_forward` for 2x2 windows at stride 2 without padding, every window whole
    (x (P, H, W), out and ``arg`` (P, H // 2, W // 2), all C-contiguous; arg written only
    when ``keep``, else it may be empty): the same comparisons in the same order, sixteen windows of a row at a time
    in vector registers (:func:`_windows_2x2`; the scalar loop ran at ~3 ns a window,
    LeNet's and the VGG-style net's pools, benchmarks/README.md section 61)."""
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    flat, oflat = x.reshape(-1), out.reshape(-1)
    aflat = arg.reshape(-1)
    keep_ = 1 if keep else 0
    for p in prange(planes):
        for i in range(ho):
            top = (p * h + 2 * i) * w
            orow = (p * ho + i) * wo
            for j in range(0, wo, LANES):
                _windows_2x2(flat, top + 2 * j, top + w + 2 * j, min(LANES, wo - j), oflat,
                             orow + j, aflat, orow + j, 2 * i * w + 2 * j, keep_)


@kernel
def max_backward(dout, arg, dx):
    """dx (P, H, W) = 0, then dx.flat[winner] += dout for every window (plane by plane)."""
    planes = dx.shape[0]
    ho, wo = dout.shape[1], dout.shape[2]
    for p in prange(planes):
        flat = dx[p].reshape(-1)
        flat[:] = 0
        for i in range(ho):
            for j in range(wo):
                flat[arg[p, i, j]] += dout[p, i, j]


SAME_GROUP = 8192   # elements of planes that max_values' flat passes take at once (in cache)
MAX_BLOCKS = 16     # blocks of planes max_values splits its planes into (threads take blocks)


@njit(cache=True, nogil=True)
def _same_max(x, out, h_max):
    """3x3 max pooling at stride 1 with padding 1 (Inception's branch pools: the output is
    the input's size) of planes x (P, H, W) into out, by two passes flat over all P*H*W
    elements, each one loop over shifted views that vectorises (row by row, 7- and
    14-wide rows ran as scalar loops: 832x7x7 took 0.07 ms, now 0.025).

    h_max (P*H*W scratch): the maxima over each window's three columns, first taken as if
    the rows ran on into each other, then the first and last column of every row
    recomputed from its two columns; the maxima over three rows the same way into out,
    the first and last row of every plane recomputed from two. Padding never enters (it
    is -infinity)."""
    planes, h, w = x.shape
    n = planes * h * w
    xf = x.reshape(-1)
    of = out.reshape(-1)
    hm = h_max[:n]
    if n > 2:
        left, mid, right, dst = xf[:n - 2], xf[1:n - 1], xf[2:], hm[1:n - 1]
        for m in range(n - 2):
            dst[m] = _nanmax(_nanmax(left[m], mid[m]), right[m])
    if w > 1:       # (the branch outside the loops: inside, 832x7x7 took twice as long)
        for r in range(planes * h):
            b, e = r * w, r * w + w - 1
            hm[b] = _nanmax(xf[b], xf[b + 1])
            hm[e] = _nanmax(xf[e - 1], xf[e])
    else:
        for r in range(n):
            hm[r] = xf[r]
    if n > 2 * w:
        up, mid, down, dst = hm[:n - 2 * w], hm[w:n - w], hm[2 * w:], of[w:n - w]
        for m in range(n - 2 * w):
            dst[m] = _nanmax(_nanmax(up[m], mid[m]), down[m])
    if h > 1:
        for p in range(planes):
            b, e = p * h * w, (p * h + h - 1) * w
            top, below, above, bottom = hm[b:b + w], hm[b + w:b + 2 * w], hm[e - w:e], hm[e:e + w]
            dst_top, dst_bottom = of[b:b + w], of[e:e + w]
            for c in range(w):
                dst_top[c] = _nanmax(top[c], below[c])
            for c in range(w):
                dst_bottom[c] = _nanmax(above[c], bottom[c])
    else:
        for m in range(n):
            of[m] = hm[m]


@njit(cache=True, nogil=True)
def _pair_max(x, out, v_max):
    """2x2 max pooling at stride 2 of planes x (P, 2*Ho, 2*Wo), every window whole, into
    out (P, Ho, Wo): the maxima of each pair of rows into v_max (P*Ho*W scratch), one loop
    of W per pair, then of each pair of columns as one loop over all of it (W is even, so
    no pair straddles two rows). Narrow planes gain from the long second loop (832x14x14:
    0.072 ms by the 2x2 kernel's rows of 7 windows, 0.033 so; 512x28x28 0.178 -> 0.060)."""
    planes, h, w = x.shape
    pairs = planes * (h // 2)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for r in range(pairs):
        top, bottom = xf[2 * r * w:(2 * r + 1) * w], xf[(2 * r + 1) * w:(2 * r + 2) * w]
        dst = v_max[r * w:(r + 1) * w]
        for c in range(w):
            dst[c] = _nanmax(top[c], bottom[c])
    for m in range(pairs * (w // 2)):
        of[m] = _nanmax(v_max[2 * m], v_max[2 * m + 1])


@njit(cache=True, nogil=True, inline="always")
def _rows_max(a, b, c, dst, n):
    """dst[:n] = max(a, b, c) elementwise, NaN winning."""
    for q in range(n):
        dst[q] = _nanmax(_nanmax(a[q], b[q]), c[q])


@njit(cache=True, nogil=True, inline="always")
def _cols_max(col, dst, kw, sw, n):
    """dst[j] = max of col[j*sw : j*sw + kw] for j < n, NaN winning. 3- and 2-wide windows
    at strides 1 and 2 are written out with constant offsets from one base (LLVM then loads
    them as interleaved vectors: the stem's 3x3/2 pool of 64x112x112 took 0.18 ms with
    shifted views, 0.16 so)."""
    if kw == 3 and sw == 2:
        for j in range(n):
            dst[j] = _nanmax(_nanmax(col[2 * j], col[2 * j + 1]), col[2 * j + 2])
    elif kw == 3 and sw == 1:
        for j in range(n):
            dst[j] = _nanmax(_nanmax(col[j], col[j + 1]), col[j + 2])
    elif kw == 2 and sw == 2:
        for j in range(n):
            dst[j] = _nanmax(col[2 * j], col[2 * j + 1])
    else:
        for j in range(n):
            dst[j] = col[j * sw]
        for k in range(1, kw):
            for j in range(n):
                dst[j] = _nanmax(dst[j], col[j * sw + k])


@njit(cache=True, nogil=True)
def _row_max(x, out, kh, kw, sh, sw, ph, pw, col):
    """Max pooling of planes x (P, H, W) into out (P, Ho, Wo), output row by output row:
    the maximum over the window's rows into ``col`` (one padded row, -infinity around the
    input's columns), then over each window's columns (:func:`_cols_max`). Rows are
    clipped to the plane by clamping their index: a clamped row is another row of the same
    window, which leaves the maximum as it is, so 3- and 2-row windows take their rows in
    one pass with no branch (the stem's 3x3/2 pool of 64x112x112: 0.43 ms -> 0.16)."""
    planes, h, w = x.shape
    ho, wo = out.shape[1], out.shape[2]
    col[:] = -np.inf
    inner = col[pw:pw + w]      # a view: an offset index kept the loops from vectorising
    three = kh == 3 and ph <= 1
    for p in range(planes):
        plane = x[p]
        for i in range(ho):
            r0 = i * sh - ph
            if three or (kh == 2 and ph <= 1):
                last = min(r0 + kh - 1, h - 1)
                _rows_max(plane[max(r0, 0)], plane[min(r0 + 1, h - 1)], plane[last], inner, w)
            else:
                top, end = max(r0, 0), min(r0 + kh, h)
                first = plane[top]
                for q in range(w):
                    inner[q] = first[q]
                for r in range(top + 1, end):
                    src = plane[r]
                    for q in range(w):
                        inner[q] = _nanmax(inner[q], src[q])
            _cols_max(col, out[p, i], kw, sw, wo)


@kernel
def max_values(x, kh, kw, sh, sw, ph, pw, out):
    """x (P, H, W) -> out (P, Ho, Wo): each window's maximum, no winners kept (max pooling
    at inference; :func:`max_forward` tracks each winner for backward), output row by
    output row (:func:`_row_max`). Padding counts as -infinity; the bottom and right
    padding also covers ceil_mode's partial windows; a NaN anywhere in a window gives NaN,
    as in PyTorch.

    Two window shapes have their own kernels, each compiled only when a call runs it
    (compiling all three as one took 5.1 s of a fresh install's first ``volnet train
    lenet5``, which runs only the 2x2 one): :func:`max_values_same` (3x3 at stride 1,
    padding 1) and :func:`max_values_pairs` (whole 2x2 windows at stride 2). Planes are cut
    into up to ``MAX_BLOCKS`` blocks, each with its own scratch, so the threaded variant
    gives the serial answer.
    """
    planes, h, w = x.shape
    wo = out.shape[2]
    blocks = min(planes, MAX_BLOCKS)
    for b in prange(blocks):
        lo, hi = b * planes // blocks, (b + 1) * planes // blocks
        col = np.empty(max(w + 2 * pw, (wo - 1) * sw + kw), dtype=x.dtype)
        _row_max(x[lo:hi], out[lo:hi], kh, kw, sh, sw, ph, pw, col)


@kernel
def max_values_same(x, out):
    """:func:`max_values` of 3x3 windows at stride 1 with padding 1 (out is x's shape):
    two flat passes over groups of planes (:func:`_same_max`, ``SAME_GROUP`` elements at
    once, in cache)."""
    planes, h, w = x.shape
    blocks = min(planes, MAX_BLOCKS)
    group = max(1, SAME_GROUP // max(h * w, 1))
    for b in prange(blocks):
        lo, hi = b * planes // blocks, (b + 1) * planes // blocks
        scratch = np.empty(min(group, hi - lo) * h * w, dtype=x.dtype)
        for g in range(lo, hi, group):
            _same_max(x[g:min(g + group, hi)], out[g:min(g + group, hi)], scratch)


@kernel
def max_values_pairs(x, out):
    """:func:`max_values` of 2x2 windows at stride 2 on planes of even height and width
    (every window whole): a pass over row pairs and a flat one (:func:`_pair_max`), over
    groups of planes as :func:`max_values_same` (the row pairs' maxima stay in cache)."""
    planes, h, w = x.shape
    blocks = min(planes, MAX_BLOCKS)
    group = max(1, SAME_GROUP // max(h * w, 1))
    for b in prange(blocks):
        lo, hi = b * planes // blocks, (b + 1) * planes // blocks
        scratch = np.empty(min(group, hi - lo) * (h // 2) * w, dtype=x.dtype)
        for g in range(lo, hi, group):
            _pair_max(x[g:min(g + group, hi)], out[g:min(g + group, hi)], scratch)
