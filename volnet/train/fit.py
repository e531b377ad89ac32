"""``volnet.fit``: train a network on arrays in one call (builds the batches and a Trainer)."""

from __future__ import annotations

import numpy as np

from volnet.data.batches import BatchIterator
from volnet.train.optim import SGD
from volnet.train.trainer import History, Trainer


def fit(net, x: np.ndarray, y: np.ndarray, *, epochs: int = 10, batch_size: int = 64,
        optimizer=None, val=None, seed: int = 0, callbacks=(), progress: bool = True,
        mean=None, std=None, **batch_options) -> History:
    """Train ``net`` on images ``x`` and labels ``y``; return the per-epoch history.

    Args:
        net: a network producing class scores.
        x: images (N, C, H, W), uint8 0-255 or float 0-1.
        y: integer labels (N,).
        epochs: passes over the data.
        batch_size: examples per update.
        optimizer: default ``SGD(lr=0.01, momentum=0.9)``.
        val: optional (x_val, y_val) of *preprocessed* float images.
        seed: shuffling and augmentation seed.
        callbacks: see :mod:`volnet.train.callbacks`.
        mean, std: per-channel normalisation on the 0-1 scale.
        **batch_options: ``crop_padding``, ``flip``, ``drop_last``, ``shard``.

    Example:
        >>> import volnet as vn
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((64, 1, 4, 4)).astype(np.float32)
        >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(int)
        >>> net = vn.Sequential(vn.Flatten(), vn.Linear(16, 2, rng=0))
        >>> history = fit(net, x, y, epochs=3, batch_size=16, progress=False)
        >>> len(history["loss"])
        3
    """
    batches = BatchIterator(x, y, batch_size, seed=seed, mean=mean, std=std, **batch_options)
    trainer = Trainer(net, optimizer or SGD(lr=0.01, momentum=0.9), callbacks=callbacks,
                      progress=progress)
    return trainer.fit(batches, epochs, val=val)
