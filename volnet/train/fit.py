"""``volnet.fit``: train a network on arrays in one call (builds the batches and a Trainer)."""

from __future__ import annotations

import warnings

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


def check_scale(x: np.ndarray, mean=None, std=None, *, name: str = "x") -> str:
    """Refuse images whose values contradict the declared scale or statistics; return the
    ``scale`` to record (what the network really sees before mean/std).

    uint8 images are divided by 255, float images are taken as already on the 0-1 scale and
    mean/std are on that 0-1 scale. A float (or int64) array holding 0-255 values, or
    statistics on the 0-255 scale, would train on numbers 255 times too large or too small,
    silently (loss 24.6 instead of 1.24, or chance), so they are errors naming the fix. A
    float array with negative values (already normalised) is taken as given and recorded so.

    Raises:
        ConfigError: the values or statistics contradict the scale.
    """
    as_is = x.dtype != np.uint8 and x.dtype.kind in "iuf" and x.size   # only uint8 is / 255
    low, high = (float(x.min()), float(x.max())) if as_is else (0.0, 1.0)
    if low >= 0 and high > 1 + 1e-3:
        scale = 255 if high <= 255 else f"{high:g}"
        raise ConfigError(
            f"{name} is a {x.dtype} array with values up to {high:g}: vn.fit takes images as "
            "uint8 0-255 (divided by 255) or float 0-1 (as they are), and would train on these "
            f"as if 0-1. Fix: pass {name}.astype(np.uint8) for 0-255 pixels, or "
            f"{name} / {scale}")
    for label, values in (("mean", mean), ("std", std)):
        v = None if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
        if v is not None and v.size and (v.min() < -1e-6 or v.max() > 1 + 1e-6):
            shown = ", ".join(f"{s:.4g}" for s in v / 255)
            raise ConfigError(
                f"{label}={tuple(v.tolist())} is not on the 0-1 scale of the images (pixels "
                "/ 255): normalised with it, every pixel lands near one value and the net "
                f"trains at chance. Fix: statistics on the 0-1 scale, e.g. {label}=({shown},) "
                "(0-255 statistics / 255)")
    if low < -1e-3:
        if mean is not None or std is not None:
            raise ConfigError(
                f"{name} already has negative values (from {low:g} to {high:g}): it looks "
                "normalised, and mean/std would normalise it again. Fix: pass the 0-1 (or "
                "uint8) images with mean/std, or the normalised ones without")
        warnings.warn(
            f"{name} is a {x.dtype} array from {low:g} to {high:g}, not 0-1 images: the network "
            "trains on it as given, and the checkpoint records scale 'as given'. volnet "
            "predict/evaluate feed images as pixels / 255 (then mean/std), so pass 0-1 or "
            "uint8 images with mean=, std= for a checkpoint they can use", UserWarning,
            stacklevel=3)
        return "as given"
    return "x / 255"


def fit(net, x: np.ndarray, y: np.ndarray, *, epochs: int = 10, batch_size: int = 64,
        optimizer=None, val=None, seed: int = 0, callbacks=(), progress: bool = True,
        mean=None, std=None, class_names=None, **batch_options) -> History:
    """Train ``net`` on images ``x`` and labels ``y``; return the per-epoch history.

    Afterwards ``net.preprocessing`` records the input shape, scaling, mean/std
    and class names, so ``vn.save(path, net)`` writes a checkpoint that
    ``volnet predict``, ``evaluate`` and ``finetune`` accept.

    Args:
        net: a network producing class scores.
        x: images (N, C, H, W), uint8 0-255 or float 0-1 (a float array of 0-255
            values, or mean/std off the 0-1 scale, is refused: see :func:`check_scale`).
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
    x = np.asarray(x)
    scale = check_scale(x, mean, std)
    if isinstance(val, (tuple, list)) and len(val) == 2:
        check_scale(np.asarray(val[0]), mean, std, name="val[0]")
    batches = BatchIterator(x, y, batch_size, seed=seed, mean=mean, std=std, **batch_options)
    val = validation_batches(val, batches)
    prep = batches.preprocessing()
    prep["scale"] = scale
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
