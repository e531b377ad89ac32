"""Evaluation in inference mode, and finding where NaN/inf entered a network."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, NonFiniteError
from volnet.functional.loss import softmax_cross_entropy


def evaluate(net, x, y=None, loss=softmax_cross_entropy, batch_size: int = 500) -> dict:
    """Mean loss and accuracy of ``net`` in inference mode.

    Args:
        net: a network returning class scores (N, num_classes).
        x: float images, or a BatchIterator (then ``y`` is None).
        y: integer labels for ``x``.

    Returns:
        {"loss": float, "accuracy": float, "predictions": int array}.
    """
    batches = x.batches(0) if y is None else (
        (x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size))
    total_loss, correct, count, preds = 0.0, 0, 0, []
    for xb, yb in batches:
        scores = net.forward(xb, training=False)
        batch_loss, _ = loss(scores, yb)
        total_loss += batch_loss * len(yb)
        pred = scores.argmax(axis=1)
        correct += int((pred == yb).sum())
        count += len(yb)
        preds.append(pred)
    if count == 0:
        raise ConfigError("evaluate: the evaluation set is empty")
    return {"loss": total_loss / count, "accuracy": correct / count,
            "predictions": np.concatenate(preds)}


def locate_nonfinite(net, xb: np.ndarray) -> str:
    """Where NaN/inf first appears: a parameter, or (for a Sequential) a top-level layer output."""
    for name, p, _ in net.named_params():
        if not np.isfinite(p).all():
            return f" (parameter {name} holds NaN/inf)"
    out = xb
    for name, child in net.named_children():   # inference mode: no state changes
        try:
            out = child.forward(out, training=False)
        except NonFiniteError:
            return ""
        if not np.isfinite(out).all():
            return f" (first non-finite output: layer {name}, {type(child).__name__})"
    return ""
