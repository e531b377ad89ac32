"""The compiled tile transforms of Winograd F(4x4, 3x3) against their definitions.

``input_tiles4`` must compute V = BT d BT^T of every 6x6 input tile (Lavin & Gray 2016),
whatever the block (tile rows [q0, q1), possibly spanning images), the channel range a
thread takes, the padding and the map's width (tiles at the end of a tile row read the
padding past the map). The references here are the definitions in float64 with BT, A and AT
written as matrices, tile by tile: also dw's ``grad_tiles4`` (A dY A^T) and the output
transform ``output_tiles4`` (AT M A, then scale, bias, shortcut and ReLU).
"""

import numpy as np
import pytest

from volnet.functional.compiled import winograd, winograd_tiles

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)


def _reference(x, rows0, cols0, q0, q1, pad, d, c_lo, c_hi):
    """(36, C, tiles) float64: BT d BT^T of each tile, point 6 k + l, tiles in block order."""
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * pad + 6 * d + 8, w + 2 * pad + 6 * d + 8))
    xp[:, :, pad:pad + h, pad:pad + w] = x
    out = np.zeros((36, c, (q1 - q0) * cols0.size))
    for qq in range(q1 - q0):
        img, th = divmod(q0 + qq, rows0.size)
        for tw, col in enumerate(cols0):
            r, s = rows0[th], col
            tile = xp[img, c_lo:c_hi, r:r + 5 * d + 1:d, s:s + 5 * d + 1:d]
            out[:, c_lo:c_hi, qq * cols0.size + tw] = np.einsum(
                "ki,cij,lj->klc", BT, tile, BT).reshape(36, c_hi - c_lo)
    return out


@pytest.mark.parametrize("shape", [
    # n, c, h, w, padding, dilation, block of tile rows (q0, q1), channel range: odd maps
    # (not multiples of 4, so the last tile of a row reads past the map), one tile per
    # row, padding 0-2, blocks spanning two images, channel counts around the groups of
    # 16, a thread's channel share, dilation 2 (the tile-by-tile sub-grid kernel)
    (1, 3, 13, 13, 0, 1, None, None), (2, 5, 23, 21, 1, 1, (1, 9), None),
    (1, 17, 6, 6, 1, 1, None, None), (3, 33, 9, 30, 2, 1, (2, 7), (5, 29)),
    (1, 16, 56, 56, 1, 1, (3, 10), (0, 16)), (8, 4, 15, 17, 0, 1, (5, 22), None),
    (1, 18, 30, 30, 2, 2, None, (3, 18))])
def test_input_tiles4_is_bt_d_bt_on_every_tile(shape):
    n, c, h, w, pad, d, block, chans = shape
    rng = np.random.default_rng(n * c + h)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    ho, wo = h + 2 * pad - 2 * d, w + 2 * pad - 2 * d
    rows0, cols0 = (winograd.tile_starts(size, 4, d) for size in (ho, wo))
    q0, q1 = block or (0, n * rows0.size)
    c_lo, c_hi = chans or (0, c)
    tiles = (q1 - q0) * cols0.size
    v = winograd.planes(np.full(36 * (c * tiles + winograd.PLANE_PAD), np.nan, np.float32),
                        c, tiles)
    entered = np.zeros(1, np.int64)       # raised as the kernel starts (block_threads)
    winograd_tiles.input_tiles4(x, v, q0, q1, rows0, cols0, d, pad, pad, c_lo, c_hi, entered)
    assert entered[0] == 1
    got = winograd.matrices(v, c)[:, c_lo:c_hi]
    want = _reference(x, rows0, cols0, q0, q1, pad, d, c_lo, c_hi)[:, c_lo:c_hi]
    # float32 transforms of unit-variance inputs: entries up to ~100, rounding ~1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


A = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [1, -1, 1, -1], [1, 2, 4, 8], [1, -2, 4, -8],
              [0, 0, 0, 1]], np.float64)          # A = AT^T of F(4x4, 3x3)


@pytest.mark.parametrize("shape", [
    # n, f, ho, wo, dilation, block of tile rows: partial last tiles, a block spanning
    # images, filter counts around the groups of 16, dilation 2
    (1, 3, 11, 13, 1, None), (2, 17, 9, 22, 1, (1, 5)), (3, 33, 6, 6, 1, (2, 5)),
    (1, 16, 56, 56, 1, (4, 11)), (1, 5, 17, 19, 2, None)])
def test_grad_tiles4_is_a_dy_at_on_every_tile(shape):
    """dw's transform of dout tiles, A dY A^T (zeros past the map), point 6 k + l."""
    n, f, ho, wo, d, block = shape
    rng = np.random.default_rng(f * ho)
    dy = rng.standard_normal((n, f, ho, wo)).astype(np.float32)
    rows0, cols0 = (winograd.tile_starts(size, 4, d) for size in (ho, wo))
    q0, q1 = block or (0, n * rows0.size)
    tiles = (q1 - q0) * cols0.size
    y = winograd.planes(np.full(36 * (f * tiles + winograd.PLANE_PAD), np.nan, np.float32),
                        f, tiles)
    winograd_tiles.grad_tiles4(dy, y, q0, q1, rows0, cols0, d)
    padded = np.zeros((n, f, ho + 4 * d + 4, wo + 4 * d + 4))
    padded[:, :, :ho, :wo] = dy
    want = np.zeros((36, f, tiles))
    for qq in range(q1 - q0):
        img, th = divmod(q0 + qq, rows0.size)
        for tw, col in enumerate(cols0):
            tile = padded[img, :, rows0[th]:rows0[th] + 3 * d + 1:d, col:col + 3 * d + 1:d]
            want[:, :, qq * cols0.size + tw] = np.einsum("ki,fij,lj->klf", A, tile,
                                                         A).reshape(36, f)
    np.testing.assert_allclose(winograd.matrices(y, f), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [
    # n, f (all), f0, filters of this call, ho, wo, dilation, block: a thread's filter
    # share (f0 > 0), partial last tiles, blocks spanning images, dilation 2
    (1, 8, 0, 8, 13, 13, 1, None), (2, 40, 7, 19, 9, 22, 1, (1, 5)),
    (1, 64, 32, 32, 56, 56, 1, (3, 10)), (3, 17, 0, 17, 6, 7, 1, (2, 6)),
    (1, 9, 2, 5, 17, 19, 2, None)])
def test_output_tiles4_is_at_m_a_with_the_epilogue(shape, relu):
    """out = AT M A per tile (rows past the map dropped) times scale plus bias plus the
    shortcut, rectified, for this call's filters only (others untouched)."""
    n, f_all, f0, nf, ho, wo, d, block = shape
    rng = np.random.default_rng(f_all * ho + nf)
    rows0, cols0 = (winograd.tile_starts(size, 4, d) for size in (ho, wo))
    q0, q1 = block or (0, n * rows0.size)
    tiles = (q1 - q0) * cols0.size
    prod = winograd.planes(rng.standard_normal(36 * (nf * tiles + winograd.PLANE_PAD)).astype(
        np.float32), nf, tiles)
    scale, bias = (rng.standard_normal(f_all).astype(np.float32) for _ in range(2))
    residual = rng.standard_normal((n, f_all, ho, wo)).astype(np.float32)
    out = np.full((n, f_all, ho, wo), np.nan, np.float32)
    winograd_tiles.output_tiles4(prod, nf, out, scale, bias, residual, relu, q0, q1, rows0,
                                 cols0, d, f0)
    m = winograd.matrices(prod, nf).astype(np.float64).reshape(6, 6, nf, tiles)
    want = np.full(out.shape, np.nan)
    for qq in range(q1 - q0):
        img, th = divmod(q0 + qq, rows0.size)
        for tw, col in enumerate(cols0):
            y = np.einsum("ik,klfp,jl->fij", A.T, m[:, :, :, qq * cols0.size + tw:][..., :1],
                          A.T)
            for i in range(4):
                for j in range(4):
                    r, s = rows0[th] + d * i, col + d * j
                    if r < ho and s < wo:
                        want[img, f0:f0 + nf, r, s] = y[:, i, j]
    sl = (slice(None), slice(f0, f0 + nf))
    want[sl] = want[sl] * scale[f0:f0 + nf, None, None] + bias[f0:f0 + nf, None, None] \
        + residual[sl]
    if relu:
        want = np.maximum(want, 0)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)   # NaN where not written
