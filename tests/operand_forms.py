"""The operand forms a compiled convolution kernel must take as their contiguous float32
copies (the outer and pointwise kernels' tests)."""

import numpy as np


def check_operand_forms(forward, x, w, b, scale, residual):
    """``forward(x, w, bias, relu, scale, residual)`` copies any layout and dtype to
    contiguous float32: a strided input, Fortran-ordered filters and residual, a strided
    bias, float64 and byte-swapped operands give the same bits as the plain ones, and a
    float32 result; read-only operands (a memory-mapped checkpoint's weights) are read in
    place; a batch of 0 gives an empty output."""
    plain = forward(x, w, b, True, scale, residual)
    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), np.float32)
    wide[..., ::2] = x
    got = forward(wide[..., ::2], np.asfortranarray(w), np.stack([b, b], 1)[:, 0], True,
                  scale, np.asfortranarray(residual))
    np.testing.assert_array_equal(got, plain)
    as64 = forward(*(v.astype(np.float64) for v in (x, w, b)), True,
                   scale.astype(np.float64), residual.astype(np.float64))
    assert as64.dtype == np.float32
    np.testing.assert_array_equal(as64, plain)
    swapped = forward(x.astype(">f4"), w.astype(">f4"), b, True, scale, residual)
    np.testing.assert_array_equal(swapped, plain)
    frozen = [v.copy() for v in (x, w, b, scale, residual)]
    for v in frozen:
        v.setflags(write=False)
    np.testing.assert_array_equal(forward(*frozen[:3], True, *frozen[3:]), plain)
    empty = forward(x[:0], w, b, True, scale, residual[:0])
    assert empty.shape == (0,) + plain.shape[1:]
