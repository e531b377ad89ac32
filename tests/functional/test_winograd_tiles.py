"""The compiled input tile transform of Winograd F(4x4, 3x3) against its definition.

``input_tiles4`` must compute V = BT d BT^T of every 6x6 input tile (Lavin & Gray 2016),
whatever the block (tile rows [q0, q1), possibly spanning images), the channel range a
thread takes, the padding and the map's width (tiles at the end of a tile row read the
padding past the map). The reference here is that definition in float64 with BT written
as a matrix, tile by tile.
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
    winograd_tiles.input_tiles4(x, v, q0, q1, rows0, cols0, d, pad, pad, c_lo, c_hi)
    got = winograd.matrices(v, c)[:, c_lo:c_hi]
    want = _reference(x, rows0, cols0, q0, q1, pad, d, c_lo, c_hi)[:, c_lo:c_hi]
    # float32 transforms of unit-variance inputs: entries up to ~100, rounding ~1e-5
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
