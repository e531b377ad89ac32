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

from volnet.train.evaluation import evaluate


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
