"""Callbacks for :class:`volnet.train.Trainer`: checkpoints, early stopping, plain functions.

A callback is any object with some of ``on_train_begin(trainer)``,
``on_batch_end(trainer, logs)``, ``on_epoch_end(trainer, logs)`` and
``on_train_end(trainer, logs)``. To end training early call ``trainer.stop()``.
"""

from __future__ import annotations

import math
import sys

from volnet.errors import ConfigError


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str, mode: str | None) -> str:
    if mode is None:
        mode = "max" if "acc" in monitor else "min"
    if mode not in ("min", "max"):
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


class ModelCheckpoint:
    """Save a resumable checkpoint after each epoch (or every ``every_n_batches`` batches).

    Args:
        path: file to write (atomically; the previous file stays valid until
            the new one is complete).
        monitor: with ``save_best_only``, the epoch log to compare (e.g.
            "val_accuracy"); otherwise ignored.
        save_best_only: write only when ``monitor`` improves.
        mode: "min" or "max"; default "max" for accuracies, else "min".
        every_n_batches: also save mid-epoch, every this many batches.
        verbose: print the path after saving.

    Only the main rank writes (``trainer.is_main``). A network with NaN/inf
    weights is never written, so the last good file survives divergence.
    """

    def __init__(self, path, monitor: str = "val_accuracy", save_best_only: bool = False,
                 mode: str | None = None, every_n_batches: int | None = None,
                 verbose: bool = False) -> None:
        self.path, self.monitor, self.save_best_only = path, monitor, bool(save_best_only)
        self.mode = _mode_for(monitor, mode)
        self.every_n_batches, self.verbose = every_n_batches, verbose
        self.best = None
        self.saved = 0

    def _save(self, trainer) -> None:
        from volnet.io.checkpoint import save

        if not trainer.is_main:
            return
        save(self.path, trainer.net, trainer=trainer)
        self.saved += 1
        if self.verbose:
            print(f"saved checkpoint {self.path}", file=sys.stderr)

    def on_batch_end(self, trainer, logs) -> None:
        if self.every_n_batches and trainer.step % self.every_n_batches == 0:
            self._save(trainer)

    def on_epoch_end(self, trainer, logs) -> None:
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ConfigError(f"ModelCheckpoint monitors {self.monitor!r}, not in the epoch "
                                  f"logs {sorted(logs)}; pass val data or monitor 'loss'")
            if not (math.isfinite(value) and _improved(value, self.best, self.mode, 0.0)):
                return
            self.best = value
        self._save(trainer)


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Example:
        >>> class FakeTrainer:
        ...     stopped = False
        ...     def stop(self): self.stopped = True
        >>> t, es = FakeTrainer(), EarlyStopping("val_loss", patience=1)
        >>> for v in (1.0, 0.9, 0.95, 0.97):
        ...     es.on_epoch_end(t, {"val_loss": v})
        >>> t.stopped, es.stopped_epoch
        (True, 4)
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 mode: str | None = None) -> None:
        if patience < 0:
            raise ConfigError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.mode = _mode_for(monitor, mode)
        self.best, self.wait, self.epochs, self.stopped_epoch = None, 0, 0, None

    def on_epoch_end(self, trainer, logs) -> None:
        self.epochs += 1
        value = logs.get(self.monitor)
        if value is None:
            raise ConfigError(f"EarlyStopping monitors {self.monitor!r}, not in the epoch logs "
                              f"{sorted(logs)}")
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = self.epochs
            trainer.stop()


class LambdaCallback:
    """Wrap plain functions: ``LambdaCallback(on_batch_end=lambda trainer, logs: ...)``."""

    def __init__(self, on_train_begin=None, on_batch_end=None, on_epoch_end=None,
                 on_train_end=None) -> None:
        for name, fn in (("on_train_begin", on_train_begin), ("on_batch_end", on_batch_end),
                         ("on_epoch_end", on_epoch_end), ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)
