"""Normalisation kernels: batch norm (training and inference) and local response norm.

Batch norm works on (N, C, *spatial) with statistics per channel C, reduced over
N and the spatial axes. LRN works across channels of (N, C, *spatial).
"""

from __future__ import annotations

import numpy as np


def _reduce_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batchnorm_forward_train(x, gamma, beta, eps, keep_cache=True):
    """Normalise with batch statistics; returns (out, mean, biased var, cache)."""
    axes = _reduce_axes(x)
    mean = x.mean(axis=axes)
    centred = x - _per_channel(mean, x.ndim)
    var = np.mean(centred * centred, axis=axes)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = centred * _per_channel(inv_std, x.ndim)
    out = x_hat * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)
    cache = (x_hat, inv_std, gamma, True) if keep_cache else None
    return out, mean, var, cache


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, keep_cache=True):
    """Normalise with running statistics: an affine map per channel."""
    inv_std = 1.0 / np.sqrt(running_var + eps)
    scale = gamma * inv_std
    shift = beta - running_mean * scale
    out = x * _per_channel(scale.astype(x.dtype), x.ndim) + _per_channel(shift.astype(x.dtype), x.ndim)
    x_hat = (x - _per_channel(running_mean, x.ndim)) * _per_channel(inv_std, x.ndim) if keep_cache else None
    cache = (x_hat, inv_std, gamma, False) if keep_cache else None
    return out, cache


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta). Training mode differentiates through the batch mean and var."""
    x_hat, inv_std, gamma, batch_stats = cache
    axes = _reduce_axes(dout)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    dx_hat = dout * _per_channel(gamma, dout.ndim)
    if not batch_stats:
        return dx_hat * _per_channel(inv_std, dout.ndim), dgamma, dbeta
    m = dout.size // dout.shape[1]
    # dx = inv_std / m * (m*dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))
    dx = (_per_channel(inv_std / m, dout.ndim)
          * (m * dx_hat
             - _per_channel(dx_hat.sum(axis=axes), dout.ndim)
             - x_hat * _per_channel((dx_hat * x_hat).sum(axis=axes), dout.ndim)))
    return dx, dgamma, dbeta


def _channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[:, c] = sum of v[:, c - before : c + after + 1] (clipped), via a cumulative sum."""
    c = v.shape[1]
    zero = np.zeros_like(v[:, :1])
    csum = np.concatenate([zero, np.cumsum(v, axis=1)], axis=1)   # csum[:, i] = sum v[:, :i]
    hi = np.minimum(np.arange(c) + after + 1, c)
    lo = np.maximum(np.arange(c) - before, 0)
    return csum[:, hi] - csum[:, lo]


def lrn_forward(x, size, alpha, beta, k, keep_cache=True):
    """PyTorch's LocalResponseNorm: b_c = a_c / (k + alpha/n * sum_{window} a^2)^beta.

    The window of ``size`` channels is centred on c: ``size // 2`` before and
    ``(size - 1) // 2`` after, zero beyond the edges.
    """
    before, after = size // 2, (size - 1) // 2
    scale = k + (alpha / size) * _channel_window_sum(x * x, before, after)
    out = x * scale ** -beta
    cache = (x, out, scale, size, alpha, beta) if keep_cache else None
    return out, cache


def lrn_backward(dout, cache):
    """dx_j = dout_j s_j^-b - (2 a b / n) x_j sum_{i: j in window(i)} dout_i y_i / s_i."""
    x, out, scale, size, alpha, beta = cache
    before, after = size // 2, (size - 1) // 2
    # j lies in window(i) iff i lies in [j - after, j + before]: the window transposed
    spread = _channel_window_sum(dout * out / scale, after, before)
    return dout * scale ** -beta - (2.0 * alpha * beta / size) * x * spread
