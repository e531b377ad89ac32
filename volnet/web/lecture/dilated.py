"""``/lecture/dilated``: dilated convolutions for semantic segmentation (Yu & Koltun 2016).

A held-out digit scene, labelled pixel by pixel by two trained segmenters bundled
with volnet (:data:`volnet.data.segmenters.CHECKPOINTS`): the dilated front-end, and
the same front-end with the basic context module. For an output unit (a pixel)
the page shows, for each, the theoretical receptive field
(:func:`volnet.receptive_field`) and the effective one: |d score / d input|, the
gradient of the unit's predicted-class score with respect to the scene, from one
backward pass of the trained network (Luo et al. 2016).
"""

from __future__ import annotations

import threading

import numpy as np

import volnet as vn
from volnet.data.scenes import make_scenes
from volnet.errors import ConfigError
from volnet.tools.segment_image import predict_mask, voc_palette
from volnet.train.segmentation_metrics import class_iou, confusion_matrix
from volnet.web.views import to_grey

MODELS = ("dilated", "dilated-context")
SCENES = 100            # held-out scenes offered (test split, data seed 0)
_CACHE: dict[str, object] = {}
_LOCK = threading.Lock()   # the nets keep forward caches: one request at a time


def segmenter(name: str):
    """The bundled trained segmenter ``name`` (loaded once)."""
    from volnet.data.segmenters import checkpoint_path

    if name not in MODELS:
        raise ConfigError(f"unknown segmenter {name!r}; choose one of: {', '.join(MODELS)}")
    if name not in _CACHE:
        _CACHE[name] = vn.load(checkpoint_path(name))
    return _CACHE[name]


def scene(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out scene ``index`` (0 .. SCENES-1): uint8 image (1, 64, 64) and its mask."""
    if not 0 <= index < SCENES:
        raise ConfigError(f"scene must be in [0, {SCENES}), got {index}")
    x, y = make_scenes(index + 1, "test")
    return x[index], y[index]


def _effective_field(net, image: np.ndarray, cls: int, row: int, col: int) -> np.ndarray:
    """|d score[cls, row, col] / d input| for the normalised image (H, W)."""
    prep = net.preprocessing
    x = ((image[None].astype(np.float32) / 255.0 - prep["mean"][0]) / prep["std"][0])
    out = net.forward(x, training=False, cache=True)
    dout = np.zeros_like(out)
    dout[0, cls, row, col] = 1.0
    return np.abs(net.backward(dout)[0, 0])


def model_view(name: str, image: np.ndarray, truth: np.ndarray, row: int, col: int) -> dict:
    """One segmenter on the scene: mask, IoU on this scene, and unit (row, col)'s fields."""
    net = segmenter(name)
    mask, probs = predict_mask(net, image)
    k = probs.shape[0]
    field = vn.receptive_field(net, tuple(image.shape))
    centre = [field.start[a] + (row, col)[a] * field.jump[a] for a in range(2)]
    box = [[c - (s - 1) / 2, c + (s - 1) / 2] for c, s in zip(centre, field.size)]
    cls = int(mask[row, col])
    grad = _effective_field(net, image, cls, row, col)
    nonzero = np.argwhere(grad > grad.max() * 1e-3) if grad.max() > 0 else np.zeros((0, 2))
    iou = class_iou(confusion_matrix(mask, truth, k))
    return {
        "model": name, "mask": mask.tolist(),
        "colours": voc_palette(k).tolist(),
        "unit_class": cls, "unit_probability": round(float(probs[cls, row, col]), 4),
        "scene_mean_iou": round(float(np.nanmean(iou)), 4),
        "size": list(field.size), "jump": list(field.jump), "box": box,
        "effective": to_grey(grad), "effective_max": float(grad.max()),
        "effective_box": (nonzero.min(axis=0).tolist() + nonzero.max(axis=0).tolist()
                          if len(nonzero) else None),    # [top, left, bottom, right], > 0.1% of max
    }


def dilated_view(index: int, row: int, col: int) -> dict:
    """The scene, its true mask and both segmenters' views of output unit (row, col)."""
    image, truth = scene(index)
    h, w = truth.shape
    if not (0 <= row < h and 0 <= col < w):
        raise ConfigError(f"unit ({row}, {col}) is outside the {h}x{w} scene")
    with _LOCK:
        views = [model_view(name, image, truth, row, col) for name in MODELS]
    names = segmenter(MODELS[0]).preprocessing["class_names"]
    return {"scene": index, "image": image[0].tolist(), "truth": truth.tolist(),
            "class_names": names, "unit": [row, col], "models": views}
