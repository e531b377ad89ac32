"""``/lecture/dense`` (slides 17-20): a classifier slid over a bigger image in one pass.

The classifier's FC layers become CONV layers (:func:`volnet.to_fully_conv`),
so one forward pass over the whole image scores every crop whose corner is a
multiple of the net's stride; finer steps need shift-and-stitch, one pass per
distinct shift (:func:`volnet.dense_scores`). The page times that against
scoring crop by crop (``crop_scores``, the definition).
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

import volnet as vn
from volnet.errors import ConfigError
from volnet.models.registry import build
from volnet.tools.dense import as_fully_conv, crop_scores

HEIGHT = 44          # uploads are scaled to this many rows (a 28-row digit fits with margin)
MAX_WIDTH = 200
ZOO = {"lenet5": (1, 28, 28)}   # untrained zoo classifier, for comparison with the trained one


def digit_strip(digits: np.ndarray, labels: np.ndarray, count: int = 5) -> tuple[np.ndarray, list]:
    """``count`` held-out digits side by side on a black HEIGHT-row strip, in [0, 1].

    Each digit's 28x28 box starts at a multiple of 4 (row 8, columns 8 + 36k), so
    crops at LeNet-5's stride of 4 land exactly on them.
    """
    strip = np.zeros((HEIGHT, 8 + 36 * count), np.float32)
    for k in range(count):
        strip[8:36, 8 + 36 * k:36 + 36 * k] = digits[k, 0] / 255.0
    return strip, [int(v) for v in labels[:count]]


def fit_upload(grey: np.ndarray) -> np.ndarray:
    """An uploaded picture as digits are stored: white on black, HEIGHT rows, at most MAX_WIDTH."""
    if grey.mean() > 0.5:            # dark ink on white paper: invert to MNIST's white on black
        grey = 1.0 - grey
    width = max(HEIGHT, min(MAX_WIDTH, round(grey.shape[1] * HEIGHT / grey.shape[0])))
    small = Image.fromarray(np.uint8(np.clip(grey, 0, 1) * 255)).resize((width, HEIGHT),
                                                                          Image.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255.0


def passes(count: int, step: int, net_stride: int) -> int:
    """Forward passes shift-and-stitch needs along one axis: the distinct shifts (i*s) mod S.

    Example:
        >>> passes(10, 4, 4), passes(10, 2, 4), passes(10, 1, 4)
        (1, 2, 4)
    """
    return len(set((np.arange(count) * step % net_stride).tolist()))


def dense_view(net, image: np.ndarray, input_shape: tuple, stride: int | None,
               mean: float, std: float) -> dict:
    """Score maps of ``net`` over ``image`` (H, W) in [0, 1], with the crop grid and timings."""
    if stride is not None and not 1 <= stride <= 64:
        raise ConfigError(f"stride must be an integer in [1, 64], got {stride}")
    x = ((image - mean) / std).astype(np.float32)[None]           # (1, H, W)
    fc = as_fully_conv(net, input_shape)
    step = stride or fc.stride[0]
    start = time.perf_counter()
    scores = vn.dense_scores(fc, x, step)                       # (K, H_map, W_map)
    dense_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = crop_scores(fc, x, step, batch_size=64)
    crops_s = time.perf_counter() - start
    rows, cols = scores.shape[1:]
    return {
        "image": np.rint(image * 255).astype(int).tolist(), "crop": list(input_shape[1:]),
        "net_stride": int(fc.stride[0]), "step": int(step), "map_size": [rows, cols],
        "passes": passes(rows, step, fc.stride[0]) * passes(cols, step, fc.stride[1]),
        "crops": rows * cols, "exact": bool(fc.exact),
        "scores": np.round(scores.astype(np.float64), 4).tolist(),
        "predicted": scores.argmax(axis=0).tolist(),
        "confidence": np.round(vn.softmax(scores.reshape(len(scores), -1).T.astype(np.float64))
                               .max(axis=1).reshape(rows, cols), 3).tolist(),
        "max_difference_to_crops": float(np.abs(scores - reference).max()),
        "dense_ms": round(dense_s * 1000, 1), "crops_ms": round(crops_s * 1000, 1),
    }


def load_classifier(data: bytes) -> tuple:
    """A checkpoint's net (``volnet.load``: safetensors, never unpickled), its input shape,
    and the mean and std its inputs were normalised with."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="volnet-dense-") as folder:
        path = os.path.join(folder, "upload.safetensors")   # a fresh private folder
        with open(path, "wb") as f:
            f.write(data)
        try:
            net = vn.load(path)
        except vn.VolnetError as err:   # name the upload, not the private temporary file
            raise type(err)(str(err).replace(path, "the uploaded checkpoint")) from None
    pre = getattr(net, "preprocessing", {}) or {}
    shape = tuple(pre.get("input_shape") or ())
    if len(shape) != 3 or shape[0] != 1:
        raise ConfigError(f"this page slides grey images over a classifier of 1xHxW inputs; the "
                          f"checkpoint records input_shape {list(shape) or 'none'} (save one "
                          "from the training page, or with volnet train on MNIST)")
    mean, std = pre.get("mean", [0.0]), pre.get("std", [1.0])
    return net, shape, float(mean[0]), float(std[0])


def zoo_classifier(name: str):
    """A freshly initialised zoo classifier and its input shape."""
    if name not in ZOO:
        raise ConfigError(f"unknown classifier {name!r}; choose session or one of: {', '.join(ZOO)}")
    return build(name, seed=0), ZOO[name]
