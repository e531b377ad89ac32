"""Per-pixel softmax cross-entropy for dense prediction, with an ignore index and class weights.

scores (N, K, H, W) float (any trailing spatial dims, or none), labels (N, H, W)
integers in [0, K) or ``ignore_index``. As ``torch.nn.functional.cross_entropy``
with ``reduction="mean"``: the loss is ``sum_i w[y_i] * -log softmax(s_i)[y_i] /
sum_i w[y_i]`` over the pixels ``i`` that are not ignored, and its gradient
``w[y_i] * (softmax(s_i) - onehot(y_i)) / sum_i w[y_i]`` (zero on ignored pixels).
One difference: where every pixel is ignored, PyTorch returns NaN; this returns
0 with a zero gradient, so a batch of border pixels only does not stop training.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import DTypeError, NonFiniteError, ShapeError


def _check(scores, labels, weight, ignore_index) -> tuple[np.ndarray, np.ndarray | None]:
    what = "pixel_cross_entropy"
    if not isinstance(scores, np.ndarray) or not np.issubdtype(scores.dtype, np.floating):
        raise DTypeError(f"{what}: scores must be a float array (N, K, H, W), got "
                         f"{type(scores).__name__} {getattr(scores, 'dtype', '')}")
    if scores.ndim < 2:
        raise ShapeError(f"{what}: scores must be (N, K, ...) with the classes on axis 1, got "
                         f"shape {scores.shape}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DTypeError(f"{what}: labels must be integer class indices, got dtype {labels.dtype}")
    expected = (scores.shape[0],) + scores.shape[2:]
    if labels.shape != expected:
        raise ShapeError(f"{what}: scores {scores.shape} need labels of shape {expected} (one "
                         f"class index per pixel), got {labels.shape}")
    k = scores.shape[1]
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= k))
    if bad.any():
        raise ShapeError(f"{what}: labels must lie in [0, {k}) or be the ignore index "
                         f"{ignore_index}; found {sorted(set(labels[bad].tolist()))[:10]}")
    if not np.isfinite(scores).all():
        raise NonFiniteError(f"{what}: scores contain NaN or infinity; check the learning rate "
                             "and the input")
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.shape != (k,) or (weight < 0).any() or not np.isfinite(weight).all():
            raise ShapeError(f"{what}: class weights must be {k} finite values >= 0, got "
                             f"shape {weight.shape}")
    return labels, weight


def pixel_cross_entropy(scores: np.ndarray, labels, ignore_index: int = 255,
                        weight=None) -> tuple[float, np.ndarray]:
    """Weighted mean over the labelled pixels of -log softmax(scores)[label], and its gradient.

    Args:
        scores: (N, K, H, W) class scores per pixel (classes on axis 1).
        labels: (N, H, W) class indices; ``ignore_index`` pixels count for nothing.
        ignore_index: label of pixels to skip (255: Pascal VOC's borders).
        weight: optional (K,) class weights (rare classes weighted up).

    Returns:
        (loss, dscores) with dscores of the shape and dtype of ``scores``.

    Example:
        >>> s = np.zeros((1, 4, 1, 2))                    # uniform scores, 4 classes
        >>> loss, d = pixel_cross_entropy(s, np.array([[[2, 255]]]))
        >>> round(loss, 4), d[0, :, 0, 1].tolist()         # ln 4; nothing for the ignored pixel
        (1.3863, [0.0, 0.0, 0.0, 0.0])
    """
    labels, weight = _check(scores, labels, weight, ignore_index)
    k = scores.shape[1]
    # (M, K) rows, one per pixel, computed in float64: sums over many pixels
    flat = np.moveaxis(scores, 1, -1).reshape(-1, k).astype(np.float64)
    target = labels.reshape(-1)
    keep = target != ignore_index
    rows = np.flatnonzero(keep)
    cls = target[rows].astype(np.intp)
    shifted = flat[rows] - flat[rows].max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    z = exp.sum(axis=1, keepdims=True)
    nll = np.log(z[:, 0]) - shifted[np.arange(len(rows)), cls]
    w = np.ones(len(rows)) if weight is None else weight[cls]
    total = float(w.sum())
    grad = np.zeros_like(flat)
    if total == 0.0:
        return 0.0, np.zeros_like(scores)
    g = exp / z
    g[np.arange(len(rows)), cls] -= 1.0
    grad[rows] = g * (w / total)[:, None]
    loss = float((w * nll).sum() / total)
    spatial = (scores.shape[0],) + scores.shape[2:] + (k,)
    dscores = np.moveaxis(grad.reshape(spatial), -1, 1).astype(scores.dtype)
    return loss, np.ascontiguousarray(dscores)
