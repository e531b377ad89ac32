"""Uploaded drawings -> MNIST-style 28x28 inputs, with Pillow kept on a short leash.

A PNG's header declares its size before any pixel is decoded, and a 194 KB
file can declare 200 megapixels, so the size is checked from the header and
only then are pixels decoded. Only PNG is accepted (the canvas sends PNG).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from volnet.errors import DataError

MAX_PIXELS = 1024 * 1024     # a drawing canvas is a few hundred pixels square
MAX_SIDE = 2048
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes) -> np.ndarray:
    """Decode PNG bytes to a float32 grey image in [0, 1], white strokes on black.

    Raises:
        DataError: not a PNG, a size over the limits (checked before decoding),
            or a corrupt file.
    """
    width, height = png_size(data)
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise DataError(f"the image declares {width}x{height} pixels; the limit is "
                        f"{MAX_PIXELS:,} pixels and {MAX_SIDE} per side")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            if image.size != (width, height):
                raise DataError("the PNG header is inconsistent")
            image.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"the PNG could not be decoded: {err}") from None
    return _to_grey(image)


def png_size(data: bytes) -> tuple[int, int]:
    r"""(width, height) from a PNG's IHDR chunk, read before Pillow sees the file.

    Example:
        >>> png_size(PNG_SIGNATURE + bytes([0, 0, 0, 13]) + b"IHDR"
        ...          + (640).to_bytes(4, "big") + (480).to_bytes(4, "big"))
        (640, 480)
    """
    if not data.startswith(PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise DataError("the upload is not a PNG image (send the canvas as image/png)")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _to_grey(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 1]; transparent pixels count as background (black)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    grey = rgba[..., :3].mean(axis=2) * rgba[..., 3]
    return grey


def mnist_style(grey: np.ndarray) -> np.ndarray:
    """Centre a drawing the way MNIST digits were prepared.

    The digit's bounding box is scaled to fit 20x20 (aspect kept) and placed
    in a 28x28 field with its centre of mass at the centre (LeCun et al.).
    An empty drawing gives an all-zero image.

    Returns:
        float32 array of shape (28, 28) in [0, 1].

    Example:
        >>> img = np.zeros((100, 100), np.float32); img[10:30, 60:70] = 1.0
        >>> out = mnist_style(img)
        >>> out.shape, round(float(out.max()), 2)
        ((28, 28), 1.0)
    """
    mask = grey > 0.05
    if not mask.any():
        return np.zeros((28, 28), dtype=np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = grey[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = 20.0 / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = Image.fromarray(np.uint8(np.clip(crop, 0, 1) * 255)).resize(size, Image.LANCZOS)
    digit = np.asarray(small, dtype=np.float32) / 255.0
    field = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - digit.shape[0]) // 2, (28 - digit.shape[1]) // 2
    field[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return _centre_of_mass(field)


# Where MNIST digits have their centre of mass, in pixel-index coordinates: measured on the
# bundled sample's first 2,000 training digits as (13.998, 14.012), std 0.29 pixels.
MNIST_CENTRE = 14.0


def _centre_of_mass(field: np.ndarray) -> np.ndarray:
    total = field.sum()
    ys, xs = np.indices(field.shape)
    dy = round(float(MNIST_CENTRE - (ys * field).sum() / total))
    dx = round(float(MNIST_CENTRE - (xs * field).sum() / total))
    # Shift without wrap-around: roll, then clear the rows/columns that came round.
    dy, dx = int(np.clip(dy, -4, 4)), int(np.clip(dx, -4, 4))
    out = np.roll(field, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = 0
    elif dy < 0:
        out[dy:] = 0
    if dx > 0:
        out[:, :dx] = 0
    elif dx < 0:
        out[:, dx:] = 0
    return out
