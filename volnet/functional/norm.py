"""Normalisation kernels: batch norm (training and inference) and local response norm.

Batch norm works on (N, C, *spatial) with statistics per channel C, reduced over
N and the spatial axes. LRN works across channels of (N, C, *spatial).
"""

from __future__ import annotations

import numpy as np

from volnet.runtime import backend, launch

_KERNELS = "volnet.functional.compiled.norm"   # compiled twins, imported on first use


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _flat3(v: np.ndarray) -> np.ndarray:
    """(N, C, *spatial) as (N, C, prod(spatial)), also for an empty batch."""
    return v.reshape(v.shape[:2] + (int(np.prod(v.shape[2:])),))


def _channel_sum(v: np.ndarray) -> np.ndarray:
    """Per-channel sum over N and spatial axes: contiguous last-axis sums first (2x faster
    than ``sum(axis=(0, 2, 3))`` measured), then over the batch."""
    return _flat3(v).sum(axis=2).sum(axis=0)


def _compiled_ok(x, *params) -> bool:
    """Whether the compiled kernels take this call: numba on, float32/64, one dtype."""
    return (x.dtype in (np.float32, np.float64) and all(p.dtype == x.dtype for p in params)
            and x.ndim >= 2 and backend.compiled(x.size))


class _Compiled:
    """What a compiled forward keeps: the input itself (the previous layer's output array,
    alive anyway) and per-channel constants, from which backward recomputes x_hat and,
    when the ReLU is fused, its mask."""

    __slots__ = ("beta", "mean", "mean_t", "relu", "scale_t", "x3")

    def __init__(self, x3, mean, mean_t, scale_t, beta, relu):
        self.x3, self.mean, self.mean_t, self.scale_t = x3, mean, mean_t, scale_t
        self.beta, self.relu = beta, relu


class _Masked:
    """NumPy path with the ReLU applied: x_hat and the mask of positive outputs."""

    __slots__ = ("mask", "x_hat")

    def __init__(self, x_hat, mask):
        self.x_hat, self.mask = x_hat, mask


def cache_has_relu(cache) -> bool:
    """True when ``cache`` comes from a forward with the ReLU fused in (``relu=True``)."""
    head = cache[0]
    return isinstance(head, _Masked) or (isinstance(head, _Compiled) and head.relu)


def _rectified(out, cache, relu):
    """NumPy path of ``relu=True``: rectify in place and keep the mask beside x_hat."""
    if not relu:
        return out, cache
    mask = out > 0
    np.maximum(out, 0, out=out)
    if cache is not None:
        cache = (_Masked(cache[0], mask),) + cache[1:]
    return out, cache



def _compiled_train(x, gamma, beta, eps, keep_cache, relu):
    x3 = np.ascontiguousarray(_flat3(x))
    c = x3.shape[1]
    out = np.empty_like(x3)
    mean, var, inv_std = np.empty(c), np.empty(c), np.empty(c)
    mean_t, scale_t = np.empty(c, x.dtype), np.empty(c, x.dtype)
    launch.run(_KERNELS, "forward_train", x3.size, x3, gamma, beta, float(eps), bool(relu), out, mean, var,
         inv_std, mean_t, scale_t)
    cache = ((_Compiled(x3, mean, mean_t, scale_t, beta.copy(), bool(relu)), inv_std, gamma, True)
             if keep_cache else None)
    return out.reshape(x.shape), mean, var, cache


def batchnorm_forward_train(x, gamma, beta, eps, keep_cache=True, relu=False):
    """Normalise with batch statistics; returns (out, mean, biased var, cache).

    ``relu=True`` returns max(0, out), and the cache's backward then takes the
    gradient of that rectified output (batch norm and the ReLU after it as one step).
    With ``backend.compiled()`` one kernel does it all (``compiled/norm.py``; mean and
    var come back in float64). The NumPy path allocates one full-size array for the
    cached x_hat and one for the output (a fresh 51 MB array costs twice an in-place
    pass in page faults; see benchmarks/README.md); the output array first holds the
    squares for the variance.
    """
    if _compiled_ok(x, gamma, beta):
        return _compiled_train(x, gamma, beta, eps, keep_cache, relu)
    m = x.size // x.shape[1]
    mean = _channel_sum(x) / m
    x_hat = x - _per_channel(mean, x.ndim).astype(x.dtype, copy=False)    # centred, for now
    out = np.multiply(x_hat, x_hat)              # squares, then the output in the same array
    var = _channel_sum(out) / m                  # pairwise sums (einsum lost digits here)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat *= _per_channel(inv_std, x.ndim)
    if not keep_cache:
        out = x_hat
    np.multiply(x_hat, _per_channel(gamma, x.ndim), out=out)
    out += _per_channel(beta, x.ndim)
    cache = (x_hat, inv_std, gamma, True) if keep_cache else None
    out, cache = _rectified(out, cache, relu)
    return out, mean, var, cache


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, keep_cache=True,
                           relu=False):
    """Normalise with running statistics: an affine map per channel (rectified if ``relu``)."""
    if _compiled_ok(x, gamma, beta, running_mean, running_var):
        x3 = np.ascontiguousarray(_flat3(x))
        inv_std = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        scale_t = (gamma * inv_std).astype(x.dtype)
        out = np.empty_like(x3)
        launch.run(_KERNELS, "apply", x3.size, x3, running_mean, scale_t, beta, bool(relu), out)
        saved = _Compiled(x3, running_mean.astype(np.float64), running_mean.copy(), scale_t,
                          beta.copy(), bool(relu))
        return out.reshape(x.shape), ((saved, inv_std, gamma, False) if keep_cache else None)
    inv_std = 1.0 / np.sqrt(running_var + eps)
    scale = gamma * inv_std
    shift = beta - running_mean * scale
    out = x * _per_channel(scale.astype(x.dtype), x.ndim)
    out += _per_channel(shift.astype(x.dtype), x.ndim)          # in place: one full-size array
    x_hat = (x - _per_channel(running_mean, x.ndim)) * _per_channel(inv_std, x.ndim) if keep_cache else None
    cache = (x_hat, inv_std, gamma, False) if keep_cache else None
    return _rectified(out, cache, relu)


def batchnorm_inference_affine(gamma, beta, running_mean, running_var, eps, bias=None,
                               dtype=None):
    """(scale, shift) per channel with ``bn(y + bias) = y * scale + shift`` at inference.

    ``scale = gamma / sqrt(var + eps)``, ``shift = (bias - mean) * scale + beta`` (bias
    None: 0): a convolution's epilogue applies them where it adds its bias, so the batch
    norm after it costs no pass of its own. Computed in float64 from the live arrays on
    every call (O(channels): nothing to cache, nothing to go stale); returned in ``dtype``
    (default gamma's).
    """
    scale = gamma.astype(np.float64) / np.sqrt(running_var.astype(np.float64) + eps)
    shift = -running_mean.astype(np.float64)
    if bias is not None:
        shift += bias
    dtype = gamma.dtype if dtype is None else dtype
    return scale.astype(dtype), (shift * scale + beta).astype(dtype)


def batchnorm_backward(dout, cache):
    """Returns (dx, dgamma, dbeta). Training mode differentiates through the batch mean and var.

    After a forward with ``relu=True``, ``dout`` is the gradient of the rectified
    output. NumPy path: with dx_hat = gamma * dout, sum(dx_hat) = gamma * dbeta and
    sum(dx_hat * x_hat) = gamma * dgamma, so dx = gamma * inv_std * (dout - dbeta/m -
    x_hat * dgamma/m): one full-size array, filled in place.
    """
    x_hat, inv_std, gamma, batch_stats = cache
    if isinstance(x_hat, _Compiled):
        return _compiled_backward(dout, x_hat, inv_std, gamma, batch_stats)
    if isinstance(x_hat, _Masked):
        dout = dout * x_hat.mask
        x_hat = x_hat.x_hat
    nd = dout.ndim
    dbeta = _channel_sum(dout)
    dx = np.multiply(dout, x_hat)                # products for dgamma, then dx in the same array
    dgamma = _channel_sum(dx)
    scale = gamma * inv_std
    if not batch_stats:
        return np.multiply(dout, _per_channel(scale.astype(dout.dtype, copy=False), nd), out=dx), dgamma, dbeta
    m = dout.size // dout.shape[1]
    np.multiply(x_hat, _per_channel((-dgamma / m).astype(dout.dtype, copy=False), nd), out=dx)
    dx += dout
    dx -= _per_channel((dbeta / m).astype(dout.dtype, copy=False), nd)
    dx *= _per_channel(scale.astype(dout.dtype, copy=False), nd)
    return dx, dgamma, dbeta


def _compiled_backward(dout, saved, inv_std, gamma, batch_stats):
    x3 = saved.x3
    d3 = np.ascontiguousarray(_flat3(dout), dtype=x3.dtype)
    dx = np.empty_like(x3)
    c = x3.shape[1]
    dgamma, dbeta = np.empty(c), np.empty(c)
    launch.run(_KERNELS, "backward", x3.size, x3, d3, saved.mean_t, saved.scale_t, saved.beta, saved.mean,
         inv_std, gamma.astype(np.float64), saved.relu, bool(batch_stats), dx, dgamma, dbeta)
    dtype = gamma.dtype
    return dx.reshape(dout.shape), dgamma.astype(dtype), dbeta.astype(dtype)


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
