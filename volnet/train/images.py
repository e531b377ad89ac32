"""Image grids as PNG: how generated digits are written to disk."""

from __future__ import annotations

import os

import numpy as np

from volnet.errors import ConfigError


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, 1, H, W) values in [0, 1] into one uint8 (rows*(H+pad)+pad, ...) image."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 1 or len(images) == 0:
        raise ConfigError(f"grid expects (N, 1, H, W) grey images with N >= 1, got {images.shape}")
    n, _, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.uint8)
    chunk = 1024   # float temporaries of a chunk only: (n, H, W) copies would double the memory
    for start in range(0, n, chunk):
        part = np.clip(images[start:start + chunk, 0], 0.0, 1.0)
        part *= 255
        part += 0.5
        pixels = part.astype(np.uint8)
        for j in range(len(pixels)):
            r, c = divmod(start + j, cols)
            out[pad + r * (h + pad):pad + r * (h + pad) + h,
                pad + c * (w + pad):pad + c * (w + pad) + w] = pixels[j]
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 grey image (H, W)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str, image: np.ndarray, overwrite: bool = True) -> str:
    """Write a uint8 grey image (H, W) as PNG (atomically, never over a file unless ``overwrite``)."""
    from volnet.io.atomic_file import atomic_write

    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise ConfigError(f"{path} exists; choose another path or delete it first")
    atomic_write(path, png_bytes(image))
    return path
