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
    """Forward, ``trainer.loss`` on class scores, backward, update; metrics loss and accuracy."""

    metrics = ("loss", "accuracy")

    def __call__(self, trainer, xb: np.ndarray, yb: np.ndarray) -> dict:
        net = trainer.net
        scores = net.forward(xb, training=True)
        loss, dscores = trainer.compute_loss(trainer.loss, scores, yb, xb)
        # parameter gradients only: the gradient of the images is never used
        net.backward(dscores.astype(scores.dtype, copy=False), input_grad=False)
        trainer.apply_gradients()
        return {"loss": float(loss), "accuracy": int((scores.argmax(axis=1) == yb).sum()) / len(yb)}

    def validate(self, trainer, val) -> dict:
        """Held-out loss and accuracy in inference mode (val: (x, y) or a BatchIterator)."""
        result = evaluate(trainer.net, val) if not isinstance(val, (tuple, list)) else evaluate(
            trainer.net, val[0], val[1], trainer.loss)
        return {"val_loss": result["loss"], "val_accuracy": result["accuracy"]}


class SegmentationStep:
    """Per-pixel softmax cross-entropy (ignore index, class weights); metrics loss and
    pixel accuracy over the labelled pixels; validation adds the held-out mean IoU.

    Args:
        num_classes: K, the network's output channels.
        ignore_index: mask value of pixels that count for nothing (255).
        weight: optional (K,) class weights for the loss.
    """

    metrics = ("loss", "pixel_accuracy")

    def __init__(self, num_classes: int, ignore_index: int = 255, weight=None) -> None:
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)

    def loss(self, scores: np.ndarray, masks: np.ndarray):
        return pixel_cross_entropy(scores, masks, self.ignore_index, self.weight)

    def __call__(self, trainer, xb: np.ndarray, yb: np.ndarray) -> dict:
        net = trainer.net
        scores = net.forward(xb, training=True)
        loss, dscores = trainer.compute_loss(self.loss, scores, yb, xb)
        net.backward(dscores, input_grad=False)
        trainer.apply_gradients()
        labelled = yb != self.ignore_index
        right = int(((scores.argmax(axis=1) == yb) & labelled).sum())
        return {"loss": float(loss), "pixel_accuracy": right / max(int(labelled.sum()), 1)}

    def validate(self, trainer, val) -> dict:
        """Held-out loss, pixel accuracy and mean IoU (val: (x, masks) or a BatchIterator)."""
        x, masks = (val[0], val[1]) if isinstance(val, (tuple, list)) else (val, None)
        result = evaluate_segmentation(trainer.net, x, masks, self.num_classes,
                                       self.ignore_index, self.weight)
        return {"val_loss": result["loss"], "val_pixel_accuracy": result["pixel_accuracy"],
                "val_mean_iou": result["mean_iou"]}
