"""Running a trained segmenter on one image, and drawing its labels over the image.

A segmenter is fully convolutional, so an image of any size is labelled at its own
resolution: it is padded with black (the scenes' background) up to a multiple of
the network's stride, normalised as in training, and the scores are cropped back.
Classes are coloured with Pascal VOC's palette; background stays uncoloured.
"""

from __future__ import annotations

import math

import numpy as np

from volnet.errors import CheckpointError, ShapeError
from volnet.limits import check_budget

STRIDE = 8            # the FCN's; a multiple of the dilated front-end's 4


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: Pascal VOC's colour map (class bits spread over R, G, B, high bits first)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        label = c
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[c] = (r, g, b)
    return palette


def segmentation_checkpoint(path: str):
    """The network of a segmentation checkpoint, with its preprocessing checked."""
    from volnet.io.checkpoint import load

    net = load(path)
    prep = net.preprocessing or {}
    if prep.get("task") != "segmentation":
        raise CheckpointError(f"{path} is not a segmentation checkpoint (it labels whole "
                              "images; use volnet predict); train one with volnet train "
                              "fcn|dilated|dilated-context")
    return net


def inference_bytes(net, input_shape) -> int:
    """Float32 bytes segmenting one image needs at its peak, from shapes alone, counted
    generously: the input and its normalised copies (three); at the busiest layer its output
    and its workspace (im2col columns: a conv's multiply-adds per output channel) beside two
    volumes as large as the largest activation (the layer's input and its zero-padded copy;
    inference keeps no cache); and the scores' softmax (two copies of the last output).
    A Python integer, computed before anything is allocated."""
    from volnet.tools.summary import summary

    rows = summary(net, input_shape).rows
    largest = max(row["activations"] for row in rows)
    busiest = max(row["activations"] + (row["macs"] // row["shape"][0] if row["macs"] else 0)
                  for row in rows)
    return 4 * (3 * math.prod(input_shape) + 2 * largest + busiest
                + 2 * rows[-1]["activations"])


def predict_mask(net, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class index per pixel (H, W) and softmax probabilities (K, H, W) for one uint8
    image (C, H, W), preprocessed as the checkpoint records."""
    from volnet.functional.loss import softmax

    prep = net.preprocessing or {}
    c, h, w = image.shape
    want = prep.get("input_shape", [c])[0]
    if c != want:
        raise ShapeError(f"the image has {c} channel(s), the segmenter was trained on {want}")
    ph, pw = -h % STRIDE, -w % STRIDE
    check_budget(inference_bytes(net, (c, h + ph, w + pw)),
                 f"segmenting a {w}x{h} image with this network")
    padded = np.pad(image, ((0, 0), (0, ph), (0, pw)))
    x = padded[None].astype(np.float32) / 255.0
    mean = np.asarray(prep.get("mean", [0.0]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(prep.get("std", [1.0]), dtype=np.float32).reshape(1, -1, 1, 1)
    scores = net.forward((x - mean) / std)[0, :, :h, :w]
    probs = softmax(scores, axis=0)
    return probs.argmax(axis=0).astype(np.uint8), probs


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.6,
            min_side: int = 256) -> np.ndarray:
    """RGB uint8: the grey (or colour) image with each non-background class painted over it,
    enlarged by a whole factor (nearest neighbour) until its shorter side is >= ``min_side``."""
    base = image[0] if image.shape[0] == 1 else image.mean(axis=0)
    rgb = np.repeat(base[..., None].astype(np.float64), 3, axis=2)
    colours = voc_palette()[mask].astype(np.float64)
    painted = mask > 0
    rgb[painted] = (1 - alpha) * rgb[painted] + alpha * colours[painted]
    scale = max(1, -(-min_side // min(mask.shape)))
    out = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return out.repeat(scale, axis=0).repeat(scale, axis=1)
