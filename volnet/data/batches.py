"""Mini-batches for training: seeded shuffling, shards, normalisation and augmentation.

The iterator is *stateless* in the epoch: the order of epoch ``e`` is a
permutation drawn from ``(seed, e)`` and the augmentation of a batch from
``(seed, e, batch, rank)``. Resuming at epoch ``e``, batch ``b`` therefore
replays exactly what an uninterrupted run would have seen; nothing but the
seed needs saving. Images stay uint8 in memory; only the current batch is
converted to float (no copy of the dataset per epoch).

Sharding for data-parallel training: ``shard=(rank, world_size)`` deals each
epoch's permutation round-robin (PyTorch's DistributedSampler rule): the order
is padded by wrapping to a multiple of ``world_size``, so every rank gets the
same number of batches; shards are disjoint when N divides evenly and together
always cover the whole epoch. Given :class:`~volnet.data.image_files.ImageFiles`
instead of an array, a rank decodes only the files of its own batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from volnet.data.image_files import ImageFiles
from volnet.errors import ConfigError, DataError


class BatchIterator:
    """Yields (images, labels) batches of float32 (B, C, H, W) and int64 (B,) (or int64
    masks (B, H, W) for per-pixel labels).

    Args:
        x: images (N, C, H, W), uint8 (0-255) or float (already scaled to 0-1).
        y: integer labels (N,), or masks (N, H, W) of one class index per pixel.
        batch_size: Examples per batch (per rank when sharded).
        shuffle: Draw a new order each epoch from ``seed``; False keeps file order.
        seed: Seed of shuffling and augmentation.
        drop_last: Drop a final batch smaller than ``batch_size``.
        mean, std: Per-channel statistics on the 0-1 scale; output is
            ``(x / 255 - mean) / std``. Default: no normalisation.
        crop_padding: Random crop: pad by this many zero pixels per side, then
            crop back to the original size at a random offset. 0 disables.
        flip: Random horizontal flip with probability 1/2.
        shard: (rank, world_size) for data-parallel training.

    Example:
        >>> x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
        >>> it = BatchIterator(x, np.arange(10), batch_size=4, shuffle=False)
        >>> [len(yb) for xb, yb in it.batches(epoch=0)]
        [4, 4, 2]
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int = 64, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, mean=None, std=None,
                 crop_padding: int = 0, flip: bool = False, shard: tuple[int, int] = (0, 1),
                 dtype=np.float32) -> None:
        # images decoded on demand stay lazy: each rank reads only its shard's files
        x = x if isinstance(x, ImageFiles) else np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 4:
            raise DataError(f"BatchIterator expects images (N, C, H, W), got shape {x.shape}")
        if y.ndim == 0 or len(y) != len(x) or (y.ndim > 1 and y.shape[1:] != x.shape[2:]):
            raise DataError(f"BatchIterator: {len(x)} images of shape {x.shape[1:]} need labels "
                            f"of shape ({len(x)},) or masks ({len(x)}, {x.shape[2]}, "
                            f"{x.shape[3]}), got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"BatchIterator: labels must be integers, got dtype {y.dtype}")
        if y.ndim > 1 and (flip or crop_padding):
            raise ConfigError("BatchIterator: flip and crop_padding move the image but not its "
                              "mask; turn them off for per-pixel labels")
        if batch_size < 1:
            raise ConfigError(f"BatchIterator: batch_size must be >= 1, got {batch_size}")
        rank, world = (int(s) for s in shard)
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"BatchIterator: shard must be (rank, world_size) with "
                              f"0 <= rank < world_size, got {shard}")
        if crop_padding < 0:
            raise ConfigError(f"BatchIterator: crop_padding must be >= 0, got {crop_padding}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.drop_last, self.crop_padding, self.flip = bool(drop_last), int(crop_padding), bool(flip)
        self.rank, self.world_size = rank, world
        self.dtype = np.dtype(dtype)
        self.mean, self.std = self._stats(mean, std, x.shape[1])

    def _stats(self, mean, std, channels):
        if mean is None and std is None:
            return None, None
        mean = np.asarray(mean if mean is not None else 0.0, dtype=self.dtype).reshape(-1)
        std = np.asarray(std if std is not None else 1.0, dtype=self.dtype).reshape(-1)
        for name, v in (("mean", mean), ("std", std)):
            if v.size not in (1, channels):
                raise ConfigError(f"BatchIterator: {name} needs 1 or {channels} values, got {v.size}")
        if (std <= 0).any():
            raise ConfigError(f"BatchIterator: std must be > 0, got {std.tolist()}")
        return mean.reshape(1, -1, 1, 1), std.reshape(1, -1, 1, 1)

    # ---- sizes -----------------------------------------------------------------
    def num_batches(self, skip: int = 0) -> int:
        """Batches this rank yields for an epoch whose first ``skip`` examples are done."""
        n = -(-max(len(self.x) - int(skip), 0) // self.world_size)   # padded shard size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        """Batches per (whole) epoch on this rank."""
        return self.num_batches(0)

    @property
    def examples_per_step(self) -> int:
        """Examples all ranks together consume per step."""
        return self.batch_size * self.world_size

    # ---- order -------------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """Global example order of ``epoch`` (a permutation of range(N), or file order)."""
        if self.shuffle:
            return np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.x))
        return np.arange(len(self.x))

    def shard_indices(self, epoch: int, skip: int = 0) -> np.ndarray:
        """This rank's example indices for ``epoch`` after the first ``skip`` of the order.

        The rest of the order is padded by wrapping to the epoch's start, to a
        multiple of world_size, then dealt round-robin.
        """
        perm = self.order(epoch)
        rest = perm[int(skip):]
        pad = (-len(rest)) % self.world_size
        if pad:
            rest = np.concatenate([rest, np.resize(perm, pad)])
        return rest[self.rank::self.world_size]

    def batches(self, epoch: int, skip: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of ``epoch``, leaving out the first ``skip`` examples of its order.

        ``skip`` lets a resumed run continue mid-epoch, also with another
        world size: a run that finished ``k`` steps has consumed
        ``k * examples_per_step`` examples.
        """
        idx = self.shard_indices(epoch, skip)
        first = int(skip) // self.examples_per_step   # global batch number, keys augmentation
        for b in range(self.num_batches(skip)):
            take = idx[b * self.batch_size:(b + 1) * self.batch_size]
            rng = np.random.default_rng([self.seed, int(epoch), first + b, self.rank, 1])
            yield self.transform(self.x[take], rng), self.y[take].astype(np.int64, copy=False)

    __iter__ = lambda self: self.batches(0)

    # ---- per-batch preprocessing --------------------------------------------------
    def transform(self, xb: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """uint8 or 0-1 float batch -> float batch: flip, crop, then normalise."""
        out = xb.astype(self.dtype)
        if xb.dtype == np.uint8:
            out *= self.dtype.type(1 / 255)
        if rng is not None and self.flip:
            flip = rng.random(len(out)) < 0.5
            out[flip] = out[flip, :, :, ::-1]
        if rng is not None and self.crop_padding:
            out = self._random_crop(out, rng)
        if self.mean is not None:
            out -= self.mean
            out /= self.std
        return out

    def transform_lazily(self, x):
        """``transform`` of all of ``x``: at once for an array; for
        :class:`~volnet.data.image_files.ImageFiles` a view that decodes and transforms
        only what is indexed (a rank's slice of the held-out set)."""
        return TransformedImages(x, self.transform) if isinstance(x, ImageFiles) else \
            self.transform(x)

    def _random_crop(self, out: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        p = self.crop_padding
        n, _, h, w = out.shape
        padded = np.pad(out, ((0, 0), (0, 0), (p, p), (p, p)))
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, n))
        return np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])

    def preprocessing(self) -> dict:
        """What a checkpoint records so the CLI feeds new images the same way.

        {"input_shape", "scale", "mean", "std"} (mean/std on the 0-1 scale, or
        absent without normalisation): the keys ``volnet predict/evaluate`` read.
        """
        prep = {"input_shape": [int(s) for s in self.x.shape[1:]], "scale": "x / 255"}
        if self.mean is not None:
            channels = self.x.shape[1]
            prep["mean"] = np.broadcast_to(self.mean.reshape(-1), (channels,)).tolist()
            prep["std"] = np.broadcast_to(self.std.reshape(-1), (channels,)).tolist()
        return prep

    def config(self) -> dict:
        """JSON description (recorded in checkpoints, checked on resume)."""
        return {"batch_size": self.batch_size, "shuffle": self.shuffle, "seed": self.seed,
                "drop_last": self.drop_last, "crop_padding": self.crop_padding, "flip": self.flip,
                "num_examples": len(self.x), "world_size": self.world_size}


class TransformedImages:
    """``transform(images[index])`` when indexed: float batches of lazily decoded images.

    Has ``shape`` and ``len`` like the array it stands for; ``evaluate`` slices it.
    """

    def __init__(self, images: ImageFiles, transform) -> None:
        self.images, self.transform = images, transform
        self.shape = images.shape

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index) -> np.ndarray:
        return self.transform(self.images[index])
