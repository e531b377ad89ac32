"""Reparameterize: the sampling step of a variational auto-encoder, with its KL term."""

from __future__ import annotations

import numpy as np

from volnet import init
from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class Reparameterize(Layer):
    """Split the input channels into (mu, log sigma^2) and draw z = mu + sigma * eps.

    The reparameterisation trick (Kingma & Welling 2014): the randomness eps ~ N(0, 1)
    comes from the injected generator, so z is a differentiable function of mu and
    log sigma^2. In inference mode z = mu (the posterior mean).

    The layer also owns the KL divergence of q(z|x) = N(mu, sigma^2) from the prior
    N(0, 1), per example ``kl = 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)``, kept in
    ``self.kl`` after each forward. With ``kl_weight`` > 0 its backward differentiates
    ``sum(z * dout) + kl_weight * sum(kl)``: a VAE sets ``kl_weight = 1 / batch`` and
    the trainer's reconstruction gradient then trains the whole negative ELBO.

    Args:
        latent: Size L of z; the input has 2L channels (mu first, then log sigma^2).
        kl_weight: Weight of the KL term in the backward pass (0: plain sampling).
        rng: Generator or seed for eps.

    Shape:
        input (N, 2L, H, W) -> output (N, L, H, W) (a DCGAN-style VAE uses H = W = 1).
    """

    def __init__(self, latent: int, kl_weight: float = 0.0, rng=None):
        super().__init__()
        if not isinstance(latent, (int, np.integer)) or isinstance(latent, bool) or latent < 1:
            raise ConfigError(f"Reparameterize: latent must be a positive int, got {latent!r}")
        if not kl_weight >= 0:
            raise ConfigError(f"Reparameterize: kl_weight must be >= 0, got {kl_weight!r}")
        self.latent, self.kl_weight = int(latent), float(kl_weight)
        self.rng = init.make_rng(rng)
        self.kl: np.ndarray | None = None

    def output_shape(self, input_shape):
        if input_shape[0] != 2 * self.latent:
            raise ShapeError(f"{self.where()} expects 2 * {self.latent} = {2 * self.latent} channels "
                             f"(mu and log sigma^2), got input shape {tuple(input_shape)}")
        return (self.latent,) + tuple(input_shape[1:])

    def _check_input(self, x):
        if x.ndim < 2:
            raise ShapeError(f"{self.where()} expects (N, 2L, ...) input, got shape {x.shape}")
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        mu, logvar = x[:, :self.latent], np.clip(x[:, self.latent:], -30.0, 20.0)
        std = np.exp(0.5 * logvar)
        axes = tuple(range(1, x.ndim))
        self.kl = 0.5 * np.sum(mu * mu + std * std - logvar - 1.0, axis=axes)
        eps = (self.rng.standard_normal(mu.shape).astype(x.dtype) if training
               else np.zeros_like(mu))
        self._cache = (mu, logvar, std, eps, x) if keep_cache else None
        return mu + std * eps

    def _backward(self, dout):
        mu, _, std, eps, x = self._cache
        dmu = dout
        dlogvar = dout * eps * 0.5 * std
        if self.kl_weight:
            dmu = dmu + self.kl_weight * mu
            dlogvar = dlogvar + self.kl_weight * 0.5 * (std * std - 1.0)
        dlogvar = np.where((x[:, self.latent:] > -30.0) & (x[:, self.latent:] < 20.0), dlogvar, 0.0)
        return np.concatenate([dmu, dlogvar], axis=1).astype(x.dtype, copy=False)

    def extra_repr(self):
        return f"latent={self.latent}" + (f", kl_weight={self.kl_weight:g}" if self.kl_weight else "")
