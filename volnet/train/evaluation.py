"""Evaluation in inference mode, and finding where NaN/inf entered a network."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, NonFiniteError
from volnet.functional.loss import softmax_cross_entropy


def evaluate(net, x, y=None, loss=softmax_cross_entropy, batch_size: int = 500,
             comm=None) -> dict:
    """Mean loss and accuracy of ``net`` in inference mode.

    Args:
        net: a network returning class scores (N, num_classes).
        x: float images, or a BatchIterator (then ``y`` is None).
        y: integer labels for ``x``.
        comm: with several ranks (a :mod:`volnet.train.communicator` communicator
            and ``x``, ``y`` arrays), each rank evaluates a contiguous 1/W of the
            examples and the sums are reduced: every rank gets the metrics and
            predictions of the whole set (equal to one process's, up to float
            rounding of the loss), in about 1/W of the time.

    Returns:
        {"loss": float, "accuracy": float, "predictions": int array}.
    """
    if comm is not None and comm.world_size > 1 and y is not None:
        return _evaluate_split(net, x, y, loss, batch_size, comm)
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


def _evaluate_split(net, x, y, loss, batch_size: int, comm) -> dict:
    """``evaluate`` over this rank's slice; loss sum, correct count and predictions reduced."""
    n = len(x)
    if n == 0:
        raise ConfigError("evaluate: the evaluation set is empty")
    lo, hi = n * comm.rank // comm.world_size, n * (comm.rank + 1) // comm.world_size
    totals = np.zeros(2, np.float64)          # loss sum, correct count
    predictions = np.zeros(n, np.int64)       # each rank fills its slice: the sum gathers them
    if hi > lo:
        mine = evaluate(net, x[lo:hi], y[lo:hi], loss, batch_size)
        totals[:] = mine["loss"] * (hi - lo), mine["accuracy"] * (hi - lo)
        predictions[lo:hi] = mine["predictions"]
    comm.allreduce_([totals, predictions], "reduction of the evaluation metrics")
    return {"loss": float(totals[0] / n), "accuracy": float(round(totals[1]) / n),
            "predictions": predictions}


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
