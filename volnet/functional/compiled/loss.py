"""Softmax cross-entropy in one pass per row: loss and gradient together, float64 inside.

Also checks what the NumPy path checks element by element (finite scores, labels in
range) and reports the first problem as a code, so the caller can raise the same
error the reference path raises.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def softmax_xent(scores, labels, dscores):
    """Returns (mean loss, status); dscores = (softmax - onehot) / N.

    status 0: fine; 1: a label out of range; 2: a score not finite (nothing useful
    is written then).
    """
    n, c = scores.shape
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            return 0.0, 1
    total = 0.0
    for i in range(n):
        row = scores[i]
        top = np.float64(row[0])
        for j in range(c):
            v = np.float64(row[j])
            if not np.isfinite(v):
                return 0.0, 2
            top = max(top, v)
        z = 0.0
        for j in range(c):
            z += np.exp(np.float64(row[j]) - top)
        log_z = np.log(z)
        y = labels[i]
        total += log_z - (np.float64(row[y]) - top)
        drow = dscores[i]
        for j in range(c):
            drow[j] = np.exp(np.float64(row[j]) - top - log_z) / n
        drow[y] = (np.exp(np.float64(row[y]) - top - log_z) - 1.0) / n
    return total / n, 0
