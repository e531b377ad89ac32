"""Learning-rate schedules, stepped once per epoch (``LinearDecay``: once per update);
they set ``optimizer.lr``.

Formulas follow ``torch.optim.lr_scheduler`` so runs agree with PyTorch:
``StepLR`` multiplies by ``gamma`` every ``step_size`` epochs, ``CosineLR``
anneals ``lr`` to ``eta_min`` over ``t_max`` epochs, ``ReduceLROnPlateau``
multiplies by ``factor`` when a monitored value stops improving.
``LinearDecay`` holds the rate, then lowers it linearly to 0 by the last update
(the GAN recipe's schedule, from Zhu et al. 2017's CycleGAN).
"""

from __future__ import annotations

import math

from volnet.errors import ConfigError


class Schedule:
    """Base class: ``step(metric=None)`` after each epoch; JSON-serialisable state.

    ``per_step = True`` (a class attribute) makes the Trainer step it after every
    update instead; ``self.epoch`` then counts updates.
    """

    per_step = False

    def __init__(self, optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self, metric: float | None = None) -> float:
        """Advance one epoch and return the new learning rate."""
        self.epoch += 1
        self.optimizer.lr = self._next_lr(metric)
        return self.optimizer.lr

    def _next_lr(self, metric):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class StepLR(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Example:
        >>> from volnet.train.optim import SGD
        >>> opt = SGD(lr=0.1)
        >>> sched = StepLR(opt, step_size=2, gamma=0.5)
        >>> [round(sched.step(), 4) for _ in range(4)]
        [0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if step_size < 1 or gamma <= 0:
            raise ConfigError(f"StepLR: need step_size >= 1 and gamma > 0, got {step_size}, {gamma}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def _next_lr(self, metric):
        lr = self.optimizer.lr
        return lr * self.gamma if self.epoch % self.step_size == 0 else lr


class CosineLR(Schedule):
    """Cosine annealing: ``eta_min + (base - eta_min) (1 + cos(pi t / t_max)) / 2``.

    Example:
        >>> from volnet.train.optim import SGD
        >>> opt = SGD(lr=1.0)
        >>> sched = CosineLR(opt, t_max=2)
        >>> [round(sched.step(), 4) for _ in range(2)]
        [0.5, 0.0]
    """

    def __init__(self, optimizer, t_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        if t_max < 1 or eta_min < 0:
            raise ConfigError(f"CosineLR: need t_max >= 1 and eta_min >= 0, got {t_max}, {eta_min}")
        self.t_max, self.eta_min = int(t_max), float(eta_min)

    def _next_lr(self, metric):
        t = min(self.epoch, self.t_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2


class ReduceLROnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without improvement.

    Args:
        mode: "min" (a loss) or "max" (an accuracy).
        factor: Multiplier in (0, 1).
        patience: Epochs without improvement tolerated.
        threshold: Relative improvement that counts (PyTorch's "rel" mode).
        cooldown: Epochs to wait after a reduction before counting again.
        min_lr: Lower bound of the learning rate.

    Example:
        >>> from volnet.train.optim import SGD
        >>> opt = SGD(lr=1.0)
        >>> sched = ReduceLROnPlateau(opt, factor=0.5, patience=1)
        >>> [sched.step(m) for m in (1.0, 1.0, 1.0, 0.5)]
        [1.0, 1.0, 0.5, 0.5]
    """

    monitor_default = "val_loss"

    def __init__(self, optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(optimizer)
        if mode not in ("min", "max") or not 0 < factor < 1 or patience < 0:
            raise ConfigError(f"ReduceLROnPlateau: need mode 'min'/'max', 0 < factor < 1, "
                              f"patience >= 0; got {mode!r}, {factor}, {patience}")
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.cooldown, self.min_lr = float(threshold), int(cooldown), float(min_lr)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def _better(self, metric: float) -> bool:
        if self.mode == "min":
            return metric < self.best * (1 - self.threshold)
        return metric > self.best * (1 + self.threshold)

    def _next_lr(self, metric):
        if metric is None:
            raise ConfigError("ReduceLROnPlateau.step needs the monitored value, e.g. the val loss")
        lr = self.optimizer.lr
        if self._better(float(metric)):
            self.best, self.bad_epochs = float(metric), 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.cooldown_left, self.bad_epochs = self.cooldown, 0
            new_lr = max(lr * self.factor, self.min_lr)
            # PyTorch skips reductions smaller than eps=1e-8
            return new_lr if lr - new_lr > 1e-8 else lr
        return lr


class LinearDecay(Schedule):
    """Constant for the first ``hold`` fraction of ``total_steps`` updates, then linearly to 0.

    Stepped after every update (``per_step``): before update ``s`` (counting from
    0) the rate is ``base`` while ``s < hold * total``, else
    ``base * (total - s) / (total - hold * total)``.

    Args:
        total_steps: updates in the whole run (epochs x batches per epoch).
        hold: fraction of the run at the full rate.

    Example:
        >>> from volnet.train.optim import SGD
        >>> opt = SGD(lr=1.0)
        >>> sched = LinearDecay(opt, total_steps=4)
        >>> [round(sched.step(), 4) for _ in range(4)]
        [1.0, 1.0, 0.5, 0.0]
    """

    per_step = True

    def __init__(self, optimizer, total_steps: int, hold: float = 0.5) -> None:
        super().__init__(optimizer)
        if total_steps < 1 or not 0 <= hold < 1:
            raise ConfigError(f"LinearDecay: need total_steps >= 1 and 0 <= hold < 1, got "
                              f"{total_steps}, {hold}")
        self.total_steps, self.hold = int(total_steps), float(hold)

    def _next_lr(self, metric):
        total, step = self.total_steps, self.epoch
        if step < total * self.hold:
            return self.base_lr
        return self.base_lr * max(0.0, (total - step) / (total - total * self.hold))

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; the horizon stays this run's (a finished run can be extended)."""
        total, hold = self.total_steps, self.hold
        super().load_state_dict(state)
        self.total_steps, self.hold = total, hold
        self.optimizer.lr = self._next_lr(None)
