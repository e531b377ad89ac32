"""``volnet.fit``: train a network on arrays in one call (builds the batches and a Trainer)."""

from __future__ import annotations

import numpy as np

from volnet.data.batches import BatchIterator
from volnet.errors import ConfigError
from volnet.train.optim import SGD
from volnet.train.trainer import History, Trainer


def validation_batches(val, batches: BatchIterator):
    """``val`` as (x_val, y_val) in the training images' format -> batches scaled and
    normalised exactly like ``batches`` (never augmented); a BatchIterator passes through."""
    if not isinstance(val, (tuple, list)):
        return val
    if len(val) != 2:
        raise ConfigError(f"val must be (x_val, y_val), got {len(val)} items")
    mean = None if batches.mean is None else batches.mean.reshape(-1)
    std = None if batches.std is None else batches.std.reshape(-1)
    out = BatchIterator(val[0], val[1], max(batches.batch_size, 256), shuffle=False,
                        mean=mean, std=std, dtype=batches.dtype)
    if out.x.shape[1:] != batches.x.shape[1:]:
        raise ConfigError(f"val images have shape {out.x.shape[1:]}, the training images "
                          f"{batches.x.shape[1:]}")
    return out


def fit(net, x: np.ndarray, y: np.ndarray, *, epochs: int = 10, batch_size: int = 64,
        optimizer=None, val=None, seed: int = 0, callbacks=(), progress: bool = True,
        mean=None, std=None, class_names=None, **batch_options) -> History:
    """Train ``net`` on images ``x`` and labels ``y``; return the per-epoch history.

    Afterwards ``net.preprocessing`` records the input shape, scaling, mean/std
    and class names, so ``vn.save(path, net)`` writes a checkpoint that
    ``volnet predict``, ``evaluate`` and ``finetune`` accept.

    Args:
        net: a network producing class scores.
        x: images (N, C, H, W), uint8 0-255 or float 0-1.
        y: integer labels (N,).
        epochs: passes over the data.
        batch_size: examples per update.
        optimizer: default ``SGD(lr=0.01, momentum=0.9)``.
        val: optional (x_val, y_val) in the same format as ``x`` (uint8 0-255 or
            float 0-1); it is scaled and normalised exactly like ``x``.
        seed: shuffling and augmentation seed.
        callbacks: see :mod:`volnet.train.callbacks`.
        mean, std: per-channel normalisation on the 0-1 scale.
        class_names: names of the classes, recorded for ``volnet predict``
            (default "0", "1", ...).
        **batch_options: ``crop_padding``, ``flip``, ``drop_last``, ``shard``.

    Example:
        >>> import volnet as vn
        >>> rng = np.random.default_rng(0)
        >>> x = rng.random((64, 1, 4, 4)).astype(np.float32)
        >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(int)
        >>> net = vn.Sequential(vn.Flatten(), vn.Linear(16, 2, rng=0))
        >>> history = fit(net, x, y, epochs=3, batch_size=16, progress=False)
        >>> len(history["loss"]), net.preprocessing["input_shape"]
        (3, [1, 4, 4])
    """
    batches = BatchIterator(x, y, batch_size, seed=seed, mean=mean, std=std, **batch_options)
    val = validation_batches(val, batches)
    prep = batches.preprocessing()
    num_classes = int(np.prod(net.output_shape(tuple(x.shape[1:]))))
    names = [str(n) for n in class_names] if class_names is not None else [
        str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"fit: {len(names)} class_names for a network with {num_classes} "
                          "outputs")
    prep["class_names"] = names
    trainer = Trainer(net, optimizer or SGD(lr=0.01, momentum=0.9), callbacks=callbacks,
                      progress=progress, metadata={"preprocessing": prep})
    history = trainer.fit(batches, epochs, val=val)
    net.preprocessing = prep
    return history
