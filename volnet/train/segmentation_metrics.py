"""Semantic-segmentation metrics from a confusion matrix, and evaluating a segmenter.

``confusion[t, p]`` counts the labelled pixels of true class ``t`` predicted as
``p`` (pixels labelled ``ignore_index`` are left out). From it: pixel accuracy
``trace / sum``; the IoU of class ``c``, ``TP / (TP + FP + FN)`` =
``C[c, c] / (row c + column c - C[c, c])``, NaN for a class neither present nor
predicted; mean IoU, the mean over the classes whose IoU is defined (the
convention of Pascal VOC's devkit and mmsegmentation's ``nanmean``).
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.functional.pixel_loss import pixel_cross_entropy


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts: rows true class, columns predicted class.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 255]), 2).tolist()
        [[1, 0], [0, 1]]
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ShapeError(f"confusion_matrix: predictions {pred.shape} and labels {target.shape} "
                         "must have one shape")
    keep = target != ignore_index
    t, p = target[keep].astype(np.int64), pred[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ShapeError(f"confusion_matrix: classes must lie in [0, {num_classes}) (or be the "
                         f"ignore index {ignore_index})")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Share of labelled pixels predicted right (NaN with no labelled pixel)."""
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def class_iou(confusion: np.ndarray) -> np.ndarray:
    """Per-class intersection over union; NaN for a class neither labelled nor predicted."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean of the defined per-class IoUs."""
    iou = class_iou(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def evaluate_segmentation(net, x, masks=None, num_classes: int | None = None,
                          ignore_index: int = 255, weight=None, batch_size: int = 100) -> dict:
    """Loss, pixel accuracy, per-class and mean IoU of ``net`` in inference mode.

    Args:
        net: a network returning scores (N, K, H, W) at the input's resolution.
        x: float images, or a BatchIterator of (images, masks) (then ``masks`` is None).
        masks: (N, H, W) labels.
        num_classes: K (default: the network's output channels).

    Returns:
        {"loss", "pixel_accuracy", "mean_iou", "class_iou" (list), "confusion" (array)}.
    """
    batches = x.batches(0) if masks is None else (
        (x[i:i + batch_size], masks[i:i + batch_size]) for i in range(0, len(x), batch_size))
    confusion, loss, pixels = None, 0.0, 0
    for xb, yb in batches:
        scores = net.forward(xb, training=False)
        if scores.ndim != 4 or scores.shape[2:] != yb.shape[1:]:
            raise ShapeError(f"evaluate_segmentation: the network gives {scores.shape} for "
                             f"{xb.shape} inputs; a segmenter returns (N, K, H, W) scores at "
                             f"the masks' {yb.shape[1:]} resolution")
        k = num_classes or scores.shape[1]
        if confusion is None:
            confusion = np.zeros((k, k), dtype=np.int64)
        batch_loss, _ = pixel_cross_entropy(scores, yb, ignore_index, weight)
        labelled = int((yb != ignore_index).sum())
        loss += batch_loss * labelled
        pixels += labelled
        confusion += confusion_matrix(scores.argmax(axis=1), yb, k, ignore_index)
    if confusion is None:
        raise ConfigError("evaluate_segmentation: the evaluation set is empty")
    return {"loss": loss / max(pixels, 1), "pixel_accuracy": pixel_accuracy(confusion),
            "mean_iou": mean_iou(confusion), "class_iou": class_iou(confusion).tolist(),
            "confusion": confusion}
