"""Flatten: volumes to vectors, between the CONV/POOL stack and FC layers."""

from __future__ import annotations

import math

import numpy as np

from volnet.layers.base import Layer


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W) in C, H, W order (PyTorch's order, so weights port).

    Example:
        >>> Flatten().output_shape((12, 16, 16))
        (3072,)
    """

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)   # a Python int: no int64 wrap on huge shapes

    def _forward(self, x, training, keep_cache):
        self._cache = x.shape if keep_cache else None
        # an explicit width, not -1: reshape cannot infer -1 for an empty batch (N=0)
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))

    def _backward(self, dout):
        return dout.reshape(self._cache)
