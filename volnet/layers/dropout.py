"""Dropout: inverted dropout with an injected random generator."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError
from volnet.layers.base import Layer


class Dropout(Layer):
    """Zero each activation with probability ``drop_prob`` while training.

    Inverted dropout: kept activations are scaled by 1 / (1 - drop_prob) at
    training time, so inference is the identity (CS231n; PyTorch's Dropout).

    Args:
        drop_prob: Probability that a unit is dropped (not kept), in [0, 1).
        rng: Generator or seed for the masks; a fixed seed reproduces a run.

    Example:
        >>> Dropout(0.5).forward(np.ones((1, 4)))   # inference: identity
        array([[1., 1., 1., 1.]])
    """

    def __init__(self, drop_prob: float = 0.5, rng=None):
        super().__init__()
        if not isinstance(drop_prob, (int, float, np.floating)) or not 0.0 <= drop_prob < 1.0:
            raise ConfigError(f"Dropout: drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)
        self.rng = init.make_rng(rng)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        if not training or self.drop_prob == 0.0:
            self._cache = 1.0 if keep_cache else None
            return x
        keep = 1.0 - self.drop_prob
        mask = (self.rng.random(x.shape, dtype=np.float32) < keep).astype(x.dtype) / x.dtype.type(keep)
        self._cache = mask if keep_cache else None
        return x * mask

    def _backward(self, dout):
        return dout * self._cache

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"
