"""Synchronised batch norm: batch statistics over the global batch of every rank.

With plain (local) batch norm each rank normalises with its own local batch's
mean and variance, so W ranks with local batch B do not compute what one
process with batch W*B computes (``data_parallel`` then averages the running
statistics over the ranks each step). Synchronised batch norm reduces the
statistics over all ranks, so W ranks reproduce one process exactly (up to
float rounding), at the price of collectives inside forward and backward:

* forward: allreduce of the per-channel sum and count -> global mean; then of
  the per-channel sum of squared deviations -> global (biased) variance. Two
  passes, like the single-process kernel, avoid the cancellation of
  ``E[x^2] - E[x]^2``. Running statistics use the global mean and the unbiased
  global variance, so they are identical on every rank.
* backward: allreduce of ``sum(dout)`` and ``sum(dout * x_hat)`` per channel:
  ``dx = gamma * inv_std / M * (M * dout - sum(dout) - x_hat * sum(dout * x_hat))``
  with M the global count. The sums are *not* averaged: each rank's ``dout``
  is W times its share of the global-mean loss, and the gradient allreduce
  divides by W afterwards, as it does for every other layer. ``dgamma`` and
  ``dbeta`` stay local sums and are averaged with the other gradients.

Inference (``training=False``) uses the running statistics and communicates
nothing. A layer without a communicator (``comm=None``, as when a checkpoint
of a sync-BN run is loaded) behaves exactly as plain batch norm.

Example:
    >>> from volnet.train.communicator import get_communicator
    >>> net = vn.Sequential(vn.Conv2d(3, 4, 3), vn.BatchNorm2d(4), vn.ReLU())
    >>> net = convert_sync_batchnorm(net, get_communicator(distributed=False))
    >>> type(net[1]).__name__, isinstance(net[1], vn.BatchNorm2d)
    ('SyncBatchNorm2d', True)
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ShapeError
from volnet.layers.norm import BatchNorm1d, BatchNorm2d


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class _SyncMixin:
    """Training-mode forward and backward with statistics reduced over ``self.comm``.

    @public (the API reference documents it: its subclasses inherit these members)
    """

    comm = None
    fuses_relu = False      # its training forward is its own: Sequential keeps the ReLU apart

    def _allreduce(self, *parts: np.ndarray, what: str) -> list[np.ndarray]:
        buf = np.concatenate([np.atleast_1d(p).astype(np.float64) for p in parts])
        self.comm.allreduce_([buf], f"{what} of {self.where()}")
        return np.split(buf, np.cumsum([np.size(p) for p in parts])[:-1])

    def _forward(self, x, training, keep_cache):
        if not training or self.comm is None:   # e.g. rebuilt from a checkpoint: plain BN
            return super()._forward(x, training, keep_cache)
        axes, dtype = _axes(x), x.dtype
        total, count = self._allreduce(x.sum(axis=axes, dtype=np.float64),
                                       np.array(x.size // x.shape[1]), what="batch mean")
        count = int(count[0])
        if count < 2:
            raise ShapeError(f"{self.where()}: training needs more than 1 value per channel over "
                             f"all ranks, got input shape {x.shape}; use a larger batch")
        mean = total / count
        centred = x - _per_channel(mean.astype(dtype), x.ndim)
        flat = centred.reshape(x.shape[0], x.shape[1], -1)
        (sq,) = self._allreduce(np.einsum("ncl,ncl->c", flat, flat, dtype=np.float64),
                                what="batch variance")
        var = sq / count
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(dtype)
        x_hat = centred * _per_channel(inv_std, x.ndim)
        gamma, beta = self.params["weight"], self.params["bias"]
        out = x_hat * _per_channel(gamma, x.ndim) + _per_channel(beta, x.ndim)
        self._cache = (x_hat, inv_std, gamma, count) if keep_cache else None
        self._update_running(mean, var, count)
        return out

    def _update_running(self, mean, var, count) -> None:
        m, bufs = self.momentum, self.buffers
        dtype = bufs["running_mean"].dtype
        bufs["running_mean"][...] = (1 - m) * bufs["running_mean"] + (m * mean).astype(dtype)
        unbiased = var * (count / (count - 1))   # as PyTorch, over the global count
        bufs["running_var"][...] = (1 - m) * bufs["running_var"] + (m * unbiased).astype(dtype)
        bufs["num_batches_tracked"] += 1

    def _backward(self, dout):
        x_hat, inv_std, gamma, count = self._cache
        if isinstance(count, (bool, np.bool_)):   # cache of an eval-mode forward(cache=True)
            return super()._backward(dout)
        axes, nd = _axes(dout), dout.ndim
        dbeta = dout.sum(axis=axes)
        dgamma = (dout * x_hat).sum(axis=axes)
        sum_dout, sum_dout_xhat = self._allreduce(dbeta, dgamma, what="backward")
        self.grads["weight"], self.grads["bias"] = dgamma, dbeta
        scale = _per_channel((gamma * inv_std / count).astype(dout.dtype), nd)
        return scale * (count * dout
                        - _per_channel(sum_dout.astype(dout.dtype), nd)
                        - x_hat * _per_channel(sum_dout_xhat.astype(dout.dtype), nd))


class SyncBatchNorm2d(_SyncMixin, BatchNorm2d):
    """``BatchNorm2d`` whose training statistics span every rank (see the module docs)."""


class SyncBatchNorm1d(_SyncMixin, BatchNorm1d):
    """``BatchNorm1d`` whose training statistics span every rank (see the module docs)."""


_TO_SYNC = {BatchNorm2d: SyncBatchNorm2d, BatchNorm1d: SyncBatchNorm1d}
_FROM_SYNC = {v: k for k, v in _TO_SYNC.items()}


def convert_sync_batchnorm(model, comm):
    """Make every batch-norm layer of ``model`` synchronise over ``comm``, in place.

    Parameters, buffers, state-dict keys and inference are unchanged; only
    training-mode statistics and their backward become global.

    Args:
        model: a volnet layer or network.
        comm: a communicator from ``volnet.train.communicator.get_communicator``.

    Returns:
        ``model`` itself.
    """
    for _, layer in model.named_layers():
        if type(layer) in _TO_SYNC:
            layer.__class__ = _TO_SYNC[type(layer)]   # in place: parents keep their children
        if isinstance(layer, _SyncMixin):
            layer.comm = comm
    return model


def revert_sync_batchnorm(model):
    """Turn synchronised batch-norm layers back into plain ones, in place (e.g. for export)."""
    for _, layer in model.named_layers():
        if type(layer) in _FROM_SYNC:
            layer.__class__ = _FROM_SYNC[type(layer)]
            layer.__dict__.pop("comm", None)
    return model
