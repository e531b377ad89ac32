"""Digit scenes for semantic segmentation: bundled MNIST digits on 64x64 canvases.

Each scene places one to three digits at random positions and scales, without
overlap, on a black canvas; its mask labels every pixel: 0 background, 1-10 the
digits 0-9, and :data:`IGNORE` (255) on the anti-aliased stroke edges, where a
pixel is partly ink and partly background (Pascal VOC marks its object borders
the same way, and the loss and the metrics skip them).

Training scenes draw from the sample's 7,000 training digits, held-out scenes
from its 1,000 held-out digits, so a network is scored on digits it never saw.
Scene ``i`` of a split is a function of ``(seed, split, i)`` alone: the same
arguments give the same arrays on every machine (Pillow's bilinear resize of
uint8 images is exact integer arithmetic).
"""

from __future__ import annotations

import numpy as np

from volnet.data.datasets import Dataset, load_mnist_sample
from volnet.errors import ConfigError

IGNORE = 255
SIZE = 64
CLASS_NAMES = ["background"] + [str(d) for d in range(10)]
SCALES = (0.75, 1.5)      # digit side 21 to 42 pixels
CORE = 128                # ink at least this bright is the digit; 1..CORE-1 is its edge
SPLITS = {"train": 0, "test": 1}


def _resized(digit: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), dtype=np.uint8)


def make_scenes(n: int, split: str = "train", seed: int = 0, size: int = SIZE,
                max_digits: int = 3, digits: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes of ``split`` ("train" or "test"): uint8 images (n, 1, size, size) and
    uint8 masks (n, size, size) with 0 background, 1-10 digits 0-9, 255 ignore.

    Args:
        n: number of scenes.
        split: which digits to draw from: the sample's training or held-out digits.
        seed: scenes are a function of (seed, split, index).
        size: canvas side in pixels (>= 42, the largest digit).
        max_digits: digits per scene, 1 to this many.
        digits: (images (N, 1, 28, 28) uint8, labels) to draw from instead of the sample.

    Example:
        >>> x, y = make_scenes(2, "test")
        >>> x.shape, y.shape, sorted(set(np.unique(y).tolist()) - set(range(11)))
        ((2, 1, 64, 64), (2, 64, 64), [255])
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if n < 0 or max_digits < 1:
        raise ConfigError(f"need n >= 0 and max_digits >= 1, got {n} and {max_digits}")
    largest = round(28 * SCALES[1])
    if size < largest:
        raise ConfigError(f"size must be at least {largest} (the largest digit), got {size}")
    if digits is None:
        data = load_mnist_sample()
        digits = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    pool, labels = digits
    images = np.zeros((n, 1, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, SPLITS[split], i])
        boxes: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(1, max_digits + 1))):
            pick = int(rng.integers(len(pool)))
            side = round(28 * rng.uniform(*SCALES))
            for _attempt in range(20):     # a free spot, or one digit fewer
                top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                if all(top + side <= t or t + s <= top or left + side <= l or l + s <= left
                       for t, l, s in boxes):
                    break
            else:
                continue
            boxes.append((top, left, side))
            ink = _resized(pool[pick, 0], side)
            images[i, 0, top:top + side, left:left + side] = ink
            patch = masks[i, top:top + side, left:left + side]
            patch[ink >= CORE] = int(labels[pick]) + 1
            patch[(ink > 0) & (ink < CORE)] = IGNORE
    return images, masks


def scene_dataset(n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Dataset:
    """Training and held-out scenes as a :class:`Dataset` whose labels are masks.

    The normalisation statistics are those of the training scenes (mostly black).
    """
    x_train, y_train = make_scenes(n_train, "train", seed)
    x_test, y_test = make_scenes(n_test, "test", seed)
    scaled = x_train.astype(np.float64) / 255.0
    return Dataset(x_train, y_train, x_test, y_test, list(CLASS_NAMES),
                   (float(scaled.mean()),), (float(scaled.std()),), f"digit scenes (seed {seed})")
