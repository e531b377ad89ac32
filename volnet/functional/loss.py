"""Classification losses: each returns (mean loss, gradient with respect to the scores).

scores (N, C) float, labels (N,) integers in [0, C). Both losses are averaged
over the batch, so the gradient carries a factor 1/N.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import DTypeError, NonFiniteError, ShapeError
from volnet.runtime import backend


def _check(scores, labels, what):
    if not isinstance(scores, np.ndarray) or not np.issubdtype(scores.dtype, np.floating):
        raise DTypeError(f"{what}: scores must be a float array (N, C), got "
                         f"{type(scores).__name__} {getattr(scores, 'dtype', '')}")
    if scores.ndim != 2:
        raise ShapeError(f"{what}: scores must be 2-D (N, C), got shape {scores.shape}")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DTypeError(f"{what}: labels must be integers (class indices), got dtype {labels.dtype}")
    if labels.shape != (scores.shape[0],):
        raise ShapeError(f"{what}: expected labels of shape ({scores.shape[0]},) for scores "
                         f"{scores.shape}, got {labels.shape}")
    if scores.shape[0] == 0:
        raise ShapeError(f"{what}: the batch is empty (N=0); a mean loss over no examples is undefined")
    bad = np.flatnonzero((labels < 0) | (labels >= scores.shape[1]))
    if bad.size:
        raise ShapeError(f"{what}: labels must lie in [0, {scores.shape[1]}); "
                         f"out of range at indices {bad[:10].tolist()}: {labels[bad[:10]].tolist()}")
    if not np.isfinite(scores).all():
        raise NonFiniteError(f"{what}: scores contain NaN or infinity; check the learning rate and the input")
    return labels.astype(np.intp, copy=False)


def softmax(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (shifted by the row maximum)."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _compiled_xent(scores, labels):
    """(loss, dscores) from the compiled kernel (``compiled/loss.py``; float64 inside), or
    None when the NumPy path must run: numba off, unusual arrays, or bad input (the
    NumPy path's checks then raise the error)."""
    if not (isinstance(scores, np.ndarray) and scores.ndim == 2 and scores.shape[0]
            and scores.dtype in (np.float32, np.float64)
            and backend.compiled(scores.size)):
        return None
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.shape != (scores.shape[0],):
        return None
    from volnet.functional.compiled.loss import softmax_xent

    dscores = np.empty_like(scores, order="C")
    loss, status = softmax_xent(np.ascontiguousarray(scores), labels.astype(np.int64, copy=False),
                                dscores)
    return (float(loss), dscores) if status == 0 else None


def softmax_cross_entropy(scores: np.ndarray, labels) -> tuple[float, np.ndarray]:
    """Mean of -log softmax(scores)[label]; gradient (softmax - onehot) / N.

    Example:
        >>> loss, d = softmax_cross_entropy(np.zeros((2, 10)), np.array([3, 7]))
        >>> round(loss, 4)   # ln(10): uniform scores
        2.3026
    """
    fast = _compiled_xent(scores, labels)
    if fast is not None:
        return fast
    labels = _check(scores, labels, "softmax_cross_entropy")
    n = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_z
    rows = np.arange(n)
    loss = -log_probs[rows, labels].mean()
    dscores = np.exp(log_probs)
    dscores[rows, labels] -= 1.0
    dscores /= n
    return float(loss), dscores


def svm_hinge_loss(scores: np.ndarray, labels, margin: float = 1.0) -> tuple[float, np.ndarray]:
    """Multiclass SVM (Weston-Watkins, CS231n): mean of sum_{j != y} max(0, s_j - s_y + margin).

    Example:
        >>> loss, d = svm_hinge_loss(np.array([[3.2, 5.1, -1.7]]), np.array([0]))
        >>> round(loss, 2)   # the CS231n notes' cat example
        2.9
    """
    labels = _check(scores, labels, "svm_hinge_loss")
    n = scores.shape[0]
    rows = np.arange(n)
    margins = scores - scores[rows, labels][:, None] + margin
    margins[rows, labels] = 0.0
    active = margins > 0
    loss = np.where(active, margins, 0.0).sum() / n
    dscores = active.astype(scores.dtype)
    dscores[rows, labels] = -active.sum(axis=1)
    dscores /= n
    return float(loss), dscores
