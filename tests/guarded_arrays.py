"""Arrays between guards, for kernels that index raw pointers unchecked (the outer and
pointwise convolutions' tests): a read past an edge finds the guard's fill (NaN shows in the
output), a write past an edge changes a guard."""

import numpy as np

GUARD = 1024


def guarded(values, fill=np.nan):
    """(buffer, view): ``values`` (float32) in the middle of a buffer with GUARD floats of
    ``fill`` on each side; the view is C-contiguous, so the kernels use it in place."""
    values = np.asarray(values, np.float32)
    buf = np.full(values.size + 2 * GUARD, fill, np.float32)
    view = buf[GUARD:GUARD + values.size].reshape(values.shape)
    view[...] = values
    return buf, view


def guards(buf):
    """The two guards of a buffer made by :func:`guarded`."""
    return np.concatenate([buf[:GUARD], buf[-GUARD:]])
