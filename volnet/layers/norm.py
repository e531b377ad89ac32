"""Normalisation layers: batch norm (1-D and 2-D) and local response norm (AlexNet, GoogLeNet)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.functional import norm as F
from volnet.layers.base import Layer
from volnet.layers.relu_fusion import ReLUFusion


class _BatchNorm(ReLUFusion, Layer):
    """Shared batch-norm machinery; subclasses fix the accepted input ranks.

    @public (the API reference documents it: its subclasses inherit these members)
    """

    ranks: tuple[int, ...] = ()
    layout = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True, dtype=np.float32):
        super().__init__()
        if num_features < 1:
            raise ConfigError(f"{type(self).__name__}: num_features must be >= 1, got {num_features}")
        if (not all(isinstance(v, (int, float, np.floating)) for v in (eps, momentum))
                or eps <= 0 or not 0.0 <= momentum <= 1.0):
            raise ConfigError(f"{type(self).__name__}: need eps > 0 and 0 <= momentum <= 1, "
                              f"got eps={eps}, momentum={momentum}")
        self.num_features, self.eps, self.momentum, self.affine = int(num_features), float(eps), float(momentum), affine
        self.params["weight"] = np.ones(num_features, dtype=dtype)
        self.params["bias"] = np.zeros(num_features, dtype=dtype)
        if not affine:
            self.frozen |= {"weight", "bias"}
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)
        self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)

    def _check_input(self, x):
        if x.ndim not in self.ranks:
            raise ShapeError(f"{self.where()} expects input {self.layout}, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ShapeError(f"{self.where()} expected {self.num_features} channels, got "
                             f"{x.shape[1]} in input of shape {x.shape}")

    def output_shape(self, input_shape):
        if input_shape[0] != self.num_features:
            raise ShapeError(f"{self.where()} expected {self.num_features} channels, got "
                             f"input shape {tuple(input_shape)}")
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        gamma, beta = self.params["weight"], self.params["bias"]
        if not training:
            out, self._cache = F.batchnorm_forward_eval(
                x, gamma, beta, self.buffers["running_mean"], self.buffers["running_var"],
                self.eps, keep_cache, relu=self._relu)
            return out
        count = x.size // x.shape[1]
        if count < 2:
            raise ShapeError(f"{self.where()}: training needs more than 1 value per channel, "
                             f"got input shape {x.shape}; use a larger batch or training=False")
        out, mean, var, self._cache = F.batchnorm_forward_train(x, gamma, beta, self.eps,
                                                                keep_cache, relu=self._relu)
        m = self.momentum
        self.buffers["running_mean"] *= 1 - m
        self.buffers["running_mean"] += m * mean
        self.buffers["running_var"] *= 1 - m
        self.buffers["running_var"] += m * var * (count / (count - 1))   # unbiased, as PyTorch
        self.buffers["num_batches_tracked"] += 1
        return out

    def _backward(self, dout):
        self._check_relu_cache(F.cache_has_relu(self._cache))
        dx, dgamma, dbeta = F.batchnorm_backward(dout, self._cache)
        self.grads["weight"], self.grads["bias"] = dgamma, dbeta
        return dx

    def skip_folded(self, out) -> None:
        """Record that the convolution before this layer applied it (folded into its
        weights at inference, ``Conv2d.forward_folded``): nothing is cached here."""
        self._cache, self._out_shape = None, out.shape

    def extra_repr(self):
        text = f"{self.num_features}"
        if self.eps != 1e-5:
            text += f", eps={self.eps}"
        if self.momentum != 0.1:
            text += f", momentum={self.momentum}"
        return text + ("" if self.affine else ", affine=False")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation per channel of (N, C, H, W) (Ioffe & Szegedy 2015).

    Training normalises with the batch's mean and biased variance and updates
    running statistics as PyTorch does: ``running = (1 - momentum) * running +
    momentum * batch``, with the *unbiased* variance. Inference uses the running
    statistics. ``affine=False`` keeps weight 1 and bias 0 fixed.

    Example:
        >>> BatchNorm2d(64).output_shape((64, 56, 56))
        (64, 56, 56)
    """

    ranks, layout = (4,), "(N, C, H, W)"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) features, as BatchNorm2d."""

    ranks, layout = (2, 3), "(N, C) or (N, C, L)"


class LocalResponseNorm(Layer):
    """Normalise across nearby channels (AlexNet, GoogLeNet), PyTorch's formula:

    ``b_c = a_c / (k + alpha / size * sum_{c' near c} a_{c'}^2) ^ beta``

    over a window of ``size`` channels centred on c (zeros beyond the edges).

    Example:
        >>> LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0).output_shape((96, 55, 55))
        (96, 55, 55)
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if size < 1:
            raise ConfigError(f"LocalResponseNorm: size must be >= 1, got {size}")
        self.size, self.alpha, self.beta, self.k = int(size), float(alpha), float(beta), float(k)

    def _check_input(self, x):
        if x.ndim < 3:
            raise ShapeError(f"{self.where()} expects (N, C, ...) with at least 3 dims, got shape {x.shape}")

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _forward(self, x, training, keep_cache):
        out, self._cache = F.lrn_forward(x, self.size, self.alpha, self.beta, self.k, keep_cache)
        return out

    def _backward(self, dout):
        return F.lrn_backward(dout, self._cache)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
