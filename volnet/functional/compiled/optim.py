"""Optimizer updates in place, one pass over each parameter (flat, C-contiguous arrays).

Every rule repeats the NumPy path's operations in the same order and in the
parameter's dtype (the hyperparameters come in an array of that dtype, as NumPy
converts Python floats), so both paths give the same bits. ``h`` holds the rule's
constants; weight decay (``decay``: h[0] holds it, 0 to skip) is added to the
gradient first, as ``torch.optim`` does.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from volnet.runtime.launch import kernel


@kernel
def sgd(p, g, v, h, momentum, nesterov):
    """h = (weight_decay, lr, momentum). v: the momentum buffer (empty without momentum)."""
    wd, lr, mu = h[0], h[1], h[2]
    for i in prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        if momentum:
            vi = v[i] * mu
            vi = vi + gi
            v[i] = vi
            if nesterov:
                p[i] = p[i] - lr * (gi + mu * vi)
            else:
                p[i] = p[i] - lr * vi
        else:
            p[i] = p[i] - lr * gi


@kernel
def adam(p, g, m, v, h):
    """h = (weight_decay, lr, b1, 1 - b1, b2, 1 - b2, 1 - b1^t, 1 - b2^t, eps)."""
    wd, lr, b1, c1, b2, c2, bc1, bc2, eps = h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    for i in prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        mi = m[i] * b1
        mi = mi + c1 * gi
        m[i] = mi
        vi = v[i] * b2
        vi = vi + c2 * gi * gi
        v[i] = vi
        p[i] = p[i] - lr * (mi / bc1) / (np.sqrt(vi / bc2) + eps)


@kernel
def rmsprop(p, g, v, h):
    """h = (weight_decay, lr, alpha, 1 - alpha, eps)."""
    wd, lr, a, ca, eps = h[0], h[1], h[2], h[3], h[4]
    for i in prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        vi = v[i] * a
        vi = vi + ca * gi * gi
        v[i] = vi
        p[i] = p[i] - lr * gi / (np.sqrt(vi) + eps)


@kernel
def adagrad(p, g, s, h):
    """h = (weight_decay, lr, eps)."""
    wd, lr, eps = h[0], h[1], h[2]
    for i in prange(p.size):
        gi = g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] - lr * gi / (np.sqrt(si) + eps)
