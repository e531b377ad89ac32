"""Image files through Pillow: folders of class sub-folders, and single images for predict.

Pillow's decompression-bomb limit is lowered while volnet decodes (a small
PNG can declare 200 megapixels), and oversized images raise a DataError. Only
regular files are opened (a FIFO named ``x.png`` is skipped with a warning,
never waited on), and a folder's images are counted, from their headers,
against the memory budget (:mod:`volnet.limits`) before any is decoded.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from volnet.errors import DataError
from volnet.limits import check_budget, is_regular_file, open_regular

MAX_PIXELS = 16_000_000
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def open_image(path: str, mode: str = "RGB"):
    """A decoded Pillow image in ``mode`` ("L" or "RGB"), refusing decompression bombs
    (more than ``MAX_PIXELS``) and unreadable files with a DataError."""
    from PIL import Image

    if not os.path.lexists(path):
        raise DataError(f"{path}: no such image file")
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings(), open_regular(path, DataError) as f:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise DataError(f"{path}: {img.width}x{img.height} exceeds the "
                                    f"{MAX_PIXELS}-pixel limit")
                return _flatten_alpha(img).convert(mode)
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read image: {err}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _flatten_alpha(img):
    """An image with transparency composited over the background its ink stands out on.

    Dropping alpha turns black ink on a transparent PNG into black on black (transparent
    pixels are usually stored as black). The ink's mean grey level (pixels weighted by
    their opacity) picks the background: white behind dark ink, black behind light ink.
    """
    from PIL import Image

    if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255
    grey = np.asarray(rgba.convert("L"), dtype=np.float64) / 255
    ink = float((grey * alpha).sum() / alpha.sum()) if alpha.sum() else 0.0
    background = (255, 255, 255, 255) if ink < 0.5 else (0, 0, 0, 255)
    return Image.alpha_composite(Image.new("RGBA", rgba.size, background), rgba).convert("RGB")


def is_blank(image: np.ndarray, tolerance: int = 8) -> bool:
    """Whether a uint8 image is one flat colour (max - min below ``tolerance``): a
    classifier's scores for it mean nothing, and the user should hear so."""
    return int(image.max()) - int(image.min()) < tolerance


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


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from an image's header, without decoding its pixels."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), open_regular(path, DataError) as f:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # refused on decode
            with Image.open(f) as img:
                return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read image: {err}") from None


def list_image_files(folder: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names and (image path, class index) under ``folder/<class>/``, regular files only.

    Anything else with an image extension (a FIFO, a socket, a device, a dangling
    link) is skipped with a warning: opening a FIFO would wait forever for a writer.
    """
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: not a folder")
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (expected {folder}/<class>/<image>)")
    files = []
    for label, name in enumerate(classes):
        sub = os.path.join(folder, name)
        for file in sorted(os.listdir(sub)):
            if not file.lower().endswith(EXTENSIONS):
                continue
            path = os.path.join(sub, file)
            if is_regular_file(path):
                files.append((path, label))
            else:
                warnings.warn(f"{path} is not a regular file (a pipe, device or dangling link); "
                              "skipped", UserWarning, stacklevel=2)
    return classes, files


def read_image_folder(folder: str, input_shape, max_bytes: int | str | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, C, H, W) uint8, labels and class names from ``folder/<class>/<image>``.

    Classes are the sub-folder names in sorted order (torchvision's ImageFolder rule).
    Every image's header is read first: the output array plus the largest decoded
    image must fit the memory budget ``max_bytes`` (default ``$VOLNET_MAX_BYTES`` or
    2 GiB) before any image is decoded.
    """
    classes, files = list_image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(EXTENSIONS)}) in the class folders")
    c, h, w = (int(s) for s in input_shape)
    largest = max(width * height for width, height in (image_size(p) for p, _ in files))
    check_budget(len(files) * c * h * w + 8 * min(largest, MAX_PIXELS),
                 f"{folder}: {len(files):,} images of {c}x{h}x{w}", max_bytes, DataError)
    images = np.empty((len(files), c, h, w), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        images[i] = load_image(path, input_shape)
    return images, np.array([label for _, label in files], dtype=np.int64), classes
