"""Drawings -> MNIST-style inputs, checked against the real MNIST digits they were drawn from."""

import io

import numpy as np
import pytest
from PIL import Image

from volnet.errors import DataError
from volnet.web.imaging import decode_png, mnist_style, png_size


def drawn_large(digit):
    """A 28x28 MNIST digit as the user might draw it: 240 px tall on a 280x280 canvas, off-centre."""
    canvas = np.zeros((280, 280), np.uint8)
    canvas[30:270, 5:245] = np.asarray(Image.fromarray(digit).resize((240, 240)))
    return canvas.astype(np.float32) / 255.0


def test_mnist_style_recovers_the_original_digits(sample):
    corr = [np.corrcoef(mnist_style(drawn_large(d)).ravel(), d.ravel())[0, 1]
            for d in sample.x_test[:100, 0]]
    assert np.median(corr) > 0.9 and min(corr) > 0.6


def test_mnist_style_fits_20_pixel_box_with_centre_of_mass_at_14(sample):
    out = mnist_style(drawn_large(sample.x_test[5, 0]))
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (20, 21)
    ys, xs = np.indices(out.shape)
    assert abs((ys * out).sum() / out.sum() - 14) <= 0.5 and abs((xs * out).sum() / out.sum() - 14) <= 0.5


def test_empty_drawing_is_all_zero():
    assert not mnist_style(np.zeros((280, 280), np.float32)).any()


def test_decode_png_grey_and_transparent():
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[2, 3] = (255, 255, 255, 255)   # one opaque white pixel; the rest transparent
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    grey = decode_png(buffer.getvalue())
    assert grey.shape == (10, 12) and grey[2, 3] == 1.0 and grey.sum() == 1.0
    assert png_size(buffer.getvalue()) == (12, 10)


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_not_a_png(data):
    with pytest.raises(DataError, match="not a PNG"):
        decode_png(data)
