"""BatchedLinear: a fully connected map over the last axis of any (N, ..., K) tensor, as
``torch.nn.Linear`` applies to channels-last maps (ConvNeXt) and ONNX writes as MatMul."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ShapeError
from volnet.layers.base import Layer


class BatchedLinear(Layer):
    """``x @ weight.T + bias`` along the last axis; every leading axis is kept.

    Args:
        in_features: K, the size of the last input axis.
        out_features: M, the size of the last output axis.
        bias: Learn a bias of shape (M,).
        rng: Generator or seed (He-normal weights, zero bias).

    Example:
        >>> BatchedLinear(4, 6).output_shape((5, 5, 4))
        (5, 5, 6)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None,
                 dtype=np.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["weight"] = init.he_normal((self.out_features, self.in_features),
                                               init.make_rng(rng), dtype)   # as Linear's
        if bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def output_shape(self, input_shape):
        if not input_shape or input_shape[-1] != self.in_features:
            raise ShapeError(f"{self.where()}: the last axis of (N, {', '.join(map(str, input_shape))}) "
                             f"must have {self.in_features} features")
        return tuple(input_shape[:-1]) + (self.out_features,)

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        out = x @ self.params["weight"].T
        if "bias" in self.params:
            out += self.params["bias"]
        self._cache = x if keep_cache else None
        return out

    def _backward(self, dout):
        x = self._cache
        flat_x, flat_d = x.reshape(-1, self.in_features), dout.reshape(-1, self.out_features)
        self.grads["weight"] = (flat_d.T @ flat_x).astype(self.params["weight"].dtype)
        if "bias" in self.params:
            self.grads["bias"] = flat_d.sum(axis=0).astype(self.params["bias"].dtype)
        return (dout @ self.params["weight"]).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}" + (
            "" if "bias" in self.params else ", bias=False")
