"""Per-layer gradient norms and update/weight ratios of a training run, sampled every few steps.

CS231n's rule of thumb: the norm of one step's update of a layer's weights
should be about 1e-3 of the weights' norm; far below, the learning rate is too
low for that layer, far above, too high. The gradient norm shows which layers
learn and whether gradients vanish or explode on their way down.
"""

from __future__ import annotations

import numpy as np

EVERY = 5     # steps between samples


class LayerStats:
    """Trainer callback recording, every ``every`` steps, each weight's grad norm and update ratio.

    A sample at step s holds ``{"step": s, "grad_norm": {name: |dW|}, "update_ratio":
    {name: |W_s - W_(s-1)| / |W_(s-1)|}}`` for every parameter called ``weight``,
    measured after step s's update (the weights of step s - 1 are copied first).
    """

    def __init__(self, every: int = EVERY) -> None:
        self.every = every
        self.samples: list[dict] = []
        self._before: dict[str, np.ndarray] = {}

    def on_batch_end(self, trainer, logs: dict) -> None:
        step = logs["step"]
        weights = [(name, p, g) for name, p, g in trainer.net.named_params()
                   if name.rsplit(".", 1)[-1] == "weight"]
        if step % self.every == 0 and self._before:
            grad = {n: round(float(np.linalg.norm(g)), 6) for n, _, g in weights if g is not None}
            ratio = {n: float(np.linalg.norm(p - self._before[n]) / (np.linalg.norm(self._before[n])
                                                                    or 1.0))
                     for n, p, _ in weights if n in self._before}
            self.samples.append({"step": step, "grad_norm": grad,
                                 "update_ratio": {n: float(f"{r:.4g}") for n, r in ratio.items()}})
            self._before = {}
        if (step + 1) % self.every == 0:   # keep the weights the next step starts from
            self._before = {n: p.copy() for n, p, _ in weights}

    def since(self, start: int) -> list[dict]:
        """The samples after the first ``start`` ones."""
        return self.samples[max(0, start):]
