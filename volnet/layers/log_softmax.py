"""LogSoftmax: log of the softmax along one axis, computed without overflow."""

from __future__ import annotations

import numpy as np

from volnet.layers.activation import Softmax


class LogSoftmax(Softmax):
    """x - logsumexp(x) along ``dim`` (default 1); backward dout - softmax * sum(dout).

    Example:
        >>> np.exp(LogSoftmax().forward(np.array([[0.0, 0.0]])))
        array([[0.5, 0.5]])
    """

    def _forward(self, x, training, keep_cache):
        shifted = x - x.max(axis=self.dim, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=self.dim, keepdims=True))
        self._cache = out if keep_cache else None
        return out

    def _backward(self, dout):
        return dout - np.exp(self._cache) * dout.sum(axis=self.dim, keepdims=True)
