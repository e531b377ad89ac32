"""What one training update does, per task: the classifier's step (the Trainer's default)
and the segmentation step. The generative models' steps live with their recipe in
:mod:`volnet.train.generative`.

A step is called as ``step(trainer, xb, yb)`` and returns its batch metrics (means
over the batch, plain floats); it computes the loss through
``trainer.compute_loss`` (which stops on NaN/inf before any update) and updates
through ``trainer.apply_gradients`` (grad_hook, norm check, optimizer). Its
``validate(trainer, val)`` returns the epoch's ``val_*`` logs; ``metrics`` names
what the epoch line prints.
"""

from __future__ import annotations

import numpy as np

from volnet.functional.pixel_loss import pixel_cross_entropy
from volnet.train.evaluation import evaluate
from volnet.train.segmentation_metrics import evaluate_segmentation


class ClassifierStep:
    """Forward, ``trainer.loss`` on class scores, backward, update; metrics loss and accuracy.

    With ``Trainer(accumulate=K)`` the batch runs as K micro-batches whose gradients add up
    before the one update (:meth:`~volnet.train.trainer.Trainer.micro_batches`).
    """

    metrics = ("loss", "accuracy")
    accumulates = True

    def __call__(self, trainer, xb: np.ndarray, yb: np.ndarray) -> dict:
        net = trainer.net
        loss, correct = 0.0, 0
        for x, y, weight, accumulate in trainer.micro_batches(xb, yb):
            scores = net.forward(x, training=True)
            micro, dscores = trainer.compute_loss(trainer.loss, scores, y, x)
            if weight != 1:   # the batch's loss is the size-weighted mean of the micro-batches'
                dscores = dscores * weight
            _backward(net, dscores.astype(scores.dtype, copy=False), accumulate)
            loss += weight * micro
            correct += int((scores.argmax(axis=1) == y).sum())
        trainer.apply_gradients()
        return {"loss": float(loss), "accuracy": correct / len(yb)}

    def validate(self, trainer, val) -> dict:
        """Held-out loss and accuracy in inference mode (val: (x, y) or a BatchIterator;
        with the trainer's ``comm``, (x, y) is split over the ranks)."""
        result = evaluate(trainer.net, val) if not isinstance(val, (tuple, list)) else evaluate(
            trainer.net, val[0], val[1], trainer.loss, comm=trainer.comm)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}


def _backward(net, dscores: np.ndarray, accumulate: bool) -> None:
    """Parameter gradients only (the images' gradient is never used); after the first
    micro-batch they add to the earlier ones'."""
    if accumulate:
        net.backward(dscores, input_grad=False, accumulate=True)
    else:
        net.backward(dscores, input_grad=False)


class SegmentationStep:
    """Per-pixel softmax cross-entropy (ignore index, class weights); metrics loss and
    pixel accuracy over the labelled pixels; validation adds the held-out mean IoU.
    Micro-batches (``accumulate``) are weighted by their share of the labelled pixels'
    class weights, so the summed gradient is the whole batch's.

    Args:
        num_classes: K, the network's output channels.
        ignore_index: mask value of pixels that count for nothing (255).
        weight: optional (K,) class weights for the loss.
    """

    metrics = ("loss", "pixel_accuracy")
    accumulates = True

    def __init__(self, num_classes: int, ignore_index: int = 255, weight=None) -> None:
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)

    def loss(self, scores: np.ndarray, masks: np.ndarray):
        return pixel_cross_entropy(scores, masks, self.ignore_index, self.weight)

    def mass(self, masks: np.ndarray) -> float:
        """What a batch's mean loss divides by: the class weights of its labelled pixels."""
        labels = masks[masks != self.ignore_index].astype(np.intp)
        return float(len(labels) if self.weight is None else self.weight[labels].sum())

    def __call__(self, trainer, xb: np.ndarray, yb: np.ndarray) -> dict:
        net = trainer.net
        loss, right = 0.0, 0
        for x, y, weight, accumulate in trainer.micro_batches(xb, yb, self.mass):
            scores = net.forward(x, training=True)
            micro, dscores = trainer.compute_loss(self.loss, scores, y, x)
            if weight != 1:   # weighted by its share of the batch's labelled pixels
                dscores = dscores * scores.dtype.type(weight)
            _backward(net, dscores, accumulate)
            loss += weight * micro
            right += int(((scores.argmax(axis=1) == y) & (y != self.ignore_index)).sum())
        trainer.apply_gradients()
        labelled = int((yb != self.ignore_index).sum())
        return {"loss": float(loss), "pixel_accuracy": right / max(labelled, 1)}

    def validate(self, trainer, val) -> dict:
        """Held-out loss, pixel accuracy and mean IoU (val: (x, masks) or a BatchIterator)."""
        x, masks = (val[0], val[1]) if isinstance(val, (tuple, list)) else (val, None)
        result = evaluate_segmentation(trainer.net, x, masks, self.num_classes,
                                       self.ignore_index, self.weight)
        return {"val_loss": result["loss"], "val_pixel_accuracy": result["pixel_accuracy"],
                "val_mean_iou": result["mean_iou"]}
