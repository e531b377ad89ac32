"""Image files through Pillow: folders of class sub-folders, and single images for predict.

Pillow's decompression-bomb limit is lowered while volnet decodes (a small
PNG can declare 200 megapixels), and oversized images raise a DataError.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from volnet.errors import DataError

MAX_PIXELS = 16_000_000
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def open_image(path: str, mode: str = "RGB"):
    """A decoded Pillow image in ``mode`` ("L" or "RGB"), refusing decompression bombs
    (more than ``MAX_PIXELS``) and unreadable files with a DataError."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(f"{path}: {img.width}x{img.height} exceeds the "
                                    f"{MAX_PIXELS}-pixel limit")
                return img.convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: cannot read image: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_image(path: str, input_shape, invert: bool = False) -> np.ndarray:
    """One image file as uint8 (C, H, W): converted to grey (C=1) or RGB (C=3), resized.

    Args:
        path: a PNG/JPEG/... file.
        input_shape: (C, H, W) the model was trained on.
        invert: 255 - pixel (dark digits on white paper -> MNIST's white on black).
    """
    from PIL import Image

    c, h, w = (int(s) for s in input_shape)
    if c not in (1, 3):
        raise DataError(f"images can be converted to 1 or 3 channels, the model wants {c}")
    img = open_image(path, "L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    array = array[None] if c == 1 else array.transpose(2, 0, 1)
    return 255 - array if invert else array


def read_image_folder(folder: str, input_shape) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) uint8, labels and class names from ``folder/<class>/<image>``.

    Classes are the sub-folder names in sorted order (torchvision's ImageFolder rule).
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>)")
    images, labels = [], []
    for label, name in enumerate(classes):
        sub = os.path.join(folder, name)
        for file in sorted(os.listdir(sub)):
            if file.lower().endswith(EXTENSIONS):
                images.append(load_image(os.path.join(sub, file), input_shape))
                labels.append(label)
    if not images:
        raise DataError(f"{folder}: no image files ({', '.join(EXTENSIONS)}) in the class folders")
    return np.stack(images), np.array(labels, dtype=np.int64), classes
