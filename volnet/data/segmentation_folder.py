"""Segmentation data in the usual folder format: ``DIR/images/NAME.png`` with
``DIR/masks/NAME.png`` holding one class index per pixel.

Either ``DIR/train/{images,masks}`` and ``DIR/test/{images,masks}``, or one
``DIR/{images,masks}`` split by ``val_fraction``. A mask is a grey ("L") or
palette ("P") PNG whose pixel values are class indices; 255 marks pixels to
ignore (Pascal VOC's borders). An optional ``DIR/classes.txt`` names the classes,
one per line. Before anything is trained the folder is checked: every image has
its mask and the other way round, image and mask have one size, all images have
one size and one colour mode, masks are single-channel, and the held-out masks
hold no class the training masks lack.
"""

from __future__ import annotations

import os

import numpy as np

from volnet.data.datasets import Dataset
from volnet.data.images import EXTENSIONS, MAX_PIXELS, image_size, open_image
from volnet.errors import DataError
from volnet.limits import check_budget, is_regular_file, open_regular

IGNORE = 255


def is_segmentation_folder(folder: str) -> bool:
    """Whether ``folder`` has images/ and masks/ (directly, or under train/)."""
    return any(os.path.isdir(os.path.join(folder, *parts, "images")) and
               os.path.isdir(os.path.join(folder, *parts, "masks")) for parts in ((), ("train",)))


def _pairs(folder: str) -> list[tuple[str, str, str]]:
    """(name, image path, mask path) for every image with its mask, sorted by name."""
    images_dir, masks_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
    for d in (images_dir, masks_dir):
        if not os.path.isdir(d):
            raise DataError(f"{folder}: no {os.path.basename(d)}/ folder (expected "
                            f"{folder}/images/NAME.png and {folder}/masks/NAME.png)")
    images = {os.path.splitext(f)[0]: os.path.join(images_dir, f) for f in os.listdir(images_dir)
              if f.lower().endswith(EXTENSIONS) and is_regular_file(os.path.join(images_dir, f))}
    masks = {os.path.splitext(f)[0]: os.path.join(masks_dir, f) for f in os.listdir(masks_dir)
             if f.lower().endswith(".png") and is_regular_file(os.path.join(masks_dir, f))}
    if not images:
        raise DataError(f"{images_dir}: no image files ({', '.join(EXTENSIONS)})")
    for what, have, lack, where in (("images", images, masks, masks_dir),
                                    ("masks", masks, images, images_dir)):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise DataError(f"{folder}: {len(missing)} {what} have no counterpart in {where} "
                            f"(e.g. {', '.join(missing[:3])}); every images/NAME.* needs a "
                            "masks/NAME.png (a lossless PNG of class indices) and the other "
                            "way round")
    return [(name, images[name], masks[name]) for name in sorted(images)]


def _mask(path: str) -> np.ndarray:
    from PIL import Image

    with open_regular(path, DataError) as f, Image.open(f) as img:
        if img.mode not in ("L", "P"):
            raise DataError(f"{path}: a mask must hold one class index per pixel (a grey 'L' or "
                            f"palette 'P' PNG), this one is {img.mode}; convert colour masks "
                            "to class indices first")
        if img.width * img.height > MAX_PIXELS:
            raise DataError(f"{path}: {img.width}x{img.height} exceeds the {MAX_PIXELS}-pixel limit")
        return np.asarray(img, dtype=np.uint8)


def read_split(folder: str, max_bytes=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) uint8, masks (N, H, W) uint8 and names of one images/ + masks/
    folder, after the checks listed above."""
    from PIL import Image

    pairs = _pairs(folder)
    sizes = {}
    modes = set()
    for name, image, _ in pairs:
        sizes.setdefault(image_size(image), name)
        with open_regular(image, DataError) as f, Image.open(f) as img:
            modes.add("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
    if len(sizes) > 1:
        (a, na), (b, nb) = list(sizes.items())[:2]
        raise DataError(f"{folder}: images differ in size ({na} is {a[0]}x{a[1]}, {nb} is "
                        f"{b[0]}x{b[1]}); a segmentation batch needs one size: resize or crop "
                        "images and masks alike first")
    (w, h), = sizes
    c = 1 if modes == {"L"} else 3
    check_budget(len(pairs) * (c + 1) * h * w, f"{folder}: {len(pairs):,} images of {c}x{h}x{w} "
                 "with masks", max_bytes, DataError)
    x = np.empty((len(pairs), c, h, w), dtype=np.uint8)
    y = np.empty((len(pairs), h, w), dtype=np.uint8)
    for i, (name, image, mask) in enumerate(pairs):
        array = np.asarray(open_image(image, "L" if c == 1 else "RGB"), dtype=np.uint8)
        x[i] = array[None] if c == 1 else array.transpose(2, 0, 1)
        m = _mask(mask)
        if m.shape != (h, w):
            raise DataError(f"{mask}: the mask is {m.shape[1]}x{m.shape[0]} but its image "
                            f"{w}x{h}; a mask labels its image's pixels one for one")
        y[i] = m
    return x, y, [name for name, _, _ in pairs]


def _class_names(folder: str, y: np.ndarray) -> list[str]:
    labels = y[y != IGNORE]
    if labels.size == 0:
        raise DataError(f"{folder}: every mask pixel is {IGNORE} (ignore); nothing to learn from")
    count = int(labels.max()) + 1
    path = os.path.join(folder, "classes.txt")
    if not os.path.exists(path):
        return [str(i) for i in range(count)]
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) < count:
        raise DataError(f"{path} names {len(names)} classes but the masks use class {count - 1}; "
                        "add the missing names (one per line, class 0 first)")
    return names


def read_segmentation_folder(folder: str, val_fraction: float | None = None, seed: int = 0,
                             max_bytes: int | str | None = None) -> Dataset:
    """A :class:`Dataset` whose labels are uint8 masks (N, H, W), from the folder format.

    Args:
        folder: with train/ and test/ (each images/ + masks/), or images/ + masks/.
        val_fraction: for the single-folder form, the share held out (0 < f < 1),
            drawn by a permutation seeded with ``seed``.
        max_bytes: memory budget (default ``$VOLNET_MAX_BYTES`` or 2 GiB).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    if os.path.isdir(os.path.join(folder, "train")):
        if val_fraction is not None:
            raise DataError(f"{folder} has train/ and test/ already; drop --val-fraction")
        x_train, y_train, _ = read_split(os.path.join(folder, "train"), max_bytes)
        x_test, y_test, _ = read_split(os.path.join(folder, "test"), max_bytes)
    else:
        if val_fraction is None:
            raise DataError(f"{folder} holds one images/ + masks/ set; pass --val-fraction F "
                            "(e.g. 0.2) to hold out a share for evaluation, or split it into "
                            f"{folder}/train and {folder}/test")
        if not 0 < val_fraction < 1:
            raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
        x, y, _ = read_split(folder, max_bytes)
        n_val = round(len(x) * val_fraction)
        if not 0 < n_val < len(x):
            raise DataError(f"{folder}: {len(x)} images with --val-fraction {val_fraction} leave "
                            f"{n_val} held out and {len(x) - n_val} for training; both need at "
                            "least one")
        order = np.random.default_rng(seed).permutation(len(x))
        x_test, y_test = x[order[:n_val]], y[order[:n_val]]
        x_train, y_train = x[order[n_val:]], y[order[n_val:]]
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: training images are {'x'.join(map(str, x_train.shape[1:]))} "
                        f"(CxHxW) but held-out images {'x'.join(map(str, x_test.shape[1:]))}; "
                        "both splits need one size and colour mode")
    names = _class_names(folder, y_train)
    unseen = sorted(set(np.unique(y_test).tolist()) - {IGNORE} - set(range(len(names))))
    if unseen:
        raise DataError(f"{folder}: held-out masks use classes {unseen[:5]} that no training "
                        f"mask has (training classes 0-{len(names) - 1}); add training examples "
                        "or name them in classes.txt")
    scaled = x_train.astype(np.float64) / 255.0
    mean = tuple(float(v) for v in scaled.mean(axis=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in scaled.std(axis=(0, 2, 3)))
    return Dataset(x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8), names,
                   mean, std, folder)


def write_segmentation_folder(folder: str, images: np.ndarray, masks: np.ndarray,
                              prefix: str = "") -> None:
    """Write uint8 images (N, C, H, W) and masks (N, H, W) as ``images/NAME.png`` +
    ``masks/NAME.png`` (names ``{prefix}00000``...), e.g. the digit scenes."""
    from PIL import Image

    for sub in ("images", "masks"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks)):
        name = f"{prefix}{i:05d}.png"
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(pixels).save(os.path.join(folder, "images", name))
        Image.fromarray(mask.astype(np.uint8), mode="L").save(os.path.join(folder, "masks", name))
