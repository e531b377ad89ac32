"""Linear: the fully connected (FC) layer."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer
from volnet.runtime.block_threads import matmul, matmul_pair


class Linear(Layer):
    """Fully connected layer: ``y = x @ weight.T + bias``.

    Args:
        in_features: Size of each input vector.
        out_features: Size of each output vector.
        bias: Add a learned bias. rng: generator or seed (He-normal weights, zero biases).

    Shape:
        (N, in_features) -> (N, out_features); weight is (out_features, in_features)
        as in PyTorch, so FC->CONV conversion is a reshape.

    Example:
        >>> Linear(16 * 16 * 12, 10).output_shape((3072,))
        (10,)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None,
                 dtype=np.float32):
        super().__init__()
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                   for v in (in_features, out_features)):
            raise ConfigError(f"Linear: in_features and out_features must be ints, got "
                              f"{in_features!r}, {out_features!r}")
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"Linear({in_features}, {out_features}): features must be >= 1")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["weight"] = init.he_normal((self.out_features, self.in_features),
                                               init.make_rng(rng), dtype)
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=dtype)

    def _check_input(self, x):
        self._expect_rank(x, 2, "(N, in_features)")
        if x.shape[1] != self.in_features:
            raise ShapeError(f"{self.where()} expected {self.in_features} input features, got "
                             f"{x.shape[1]} (input shape {x.shape})")

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ShapeError(f"{self.where()} expected input shape ({self.in_features},), got "
                             f"{tuple(input_shape)}")
        return (self.out_features,)

    def _forward(self, x, training, keep_cache):
        self._cache = x if keep_cache else None
        out = matmul(x, self.params["weight"].T)   # volnet's threads split large ones
        if "bias" in self.params:
            out += self.params["bias"]
        return out

    def _backward(self, dout):
        x = self._cache
        # dw and dx side by side, one on each thread where they are large
        self.grads["weight"], dx = matmul_pair(dout.T, x, dout, self.params["weight"])
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)
        return dx

    def _backward_params(self, dout):
        x = self._cache
        self.grads["weight"] = matmul(dout.T, x)
        if "bias" in self.params:
            self.grads["bias"] = dout.sum(axis=0)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if "bias" in self.params else ", bias=False")
