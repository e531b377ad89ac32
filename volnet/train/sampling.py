"""Using a trained DCGAN or VAE: drawing digits, reconstructions, the held-out negative ELBO."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.train.generative import LATENT, bce_with_logits, decode, kind_of

GENERATE_BATCH = 500   # codes decoded per forward pass by generate


def negative_elbo(vae, x: np.ndarray, seed: int = 0, batch: int = 500) -> dict:
    """Held-out negative ELBO in nats per digit (one posterior sample each), with its parts."""
    sample = vae.sample
    saved = sample.rng
    sample.rng = np.random.default_rng(seed)
    rec = kl = 0.0
    try:
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            logits = _sampled(vae, xb)
            rec += float(bce_with_logits(logits, xb)[0].sum())
            kl += float(sample.kl.sum())
    finally:
        sample.rng = saved
    n = len(x)
    return {"neg_elbo": (rec + kl) / n, "recon": rec / n, "kl": kl / n}


def _sampled(vae, x):
    """Decoder logits for one posterior sample per image, batch norm (none here) in eval mode."""
    h = vae.encoder.forward(x)
    z = vae.sample.forward(h, training=True, cache=False)
    return vae.decoder.forward(z)


def generate(net, n: int, seed: int = 0, batch: int = GENERATE_BATCH) -> np.ndarray:
    """(n, 1, 28, 28) digits in [0, 1] from a trained DCGAN or VAE checkpoint's network.

    The codes are drawn at once (the same digits for a seed whatever ``batch``) and decoded
    ``batch`` at a time, so the network's activations stay those of one batch.
    """
    kind = kind_of(net)
    z = np.random.default_rng(seed).standard_normal((n, LATENT[kind], 1, 1)).astype(np.float32)
    out = None
    for i in range(0, n, batch):   # into one array: a list of batches then concatenated is 2x
        images = decode(net, kind, z[i:i + batch])
        if out is None:
            out = np.empty((n,) + images.shape[1:], dtype=images.dtype)
        out[i:i + len(images)] = images
    return out


def reconstruct(net, x: np.ndarray) -> np.ndarray:
    """The VAE's reconstructions (posterior mean) of digits x in [0, 1]."""
    if kind_of(net) != "vae":
        raise ConfigError("--reconstruct needs a VAE checkpoint (volnet train vae); a GAN has "
                          "no encoder")
    return 1.0 / (1.0 + np.exp(-net.forward(x.astype(np.float32))))
