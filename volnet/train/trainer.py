"""The training loop, shared by ``volnet train``, the web demo and MPI training.

API (stable; the demo and distributed training build on it)::

    trainer = Trainer(net, optimizer, loss=softmax_cross_entropy, callbacks=[...],
                      grad_hook=None, is_main=True, progress=True, schedule=None,
                      train_step=None)
    history = trainer.fit(train_batches, epochs=10, val=(x_val, y_val))

* ``train_step`` is what one update does (Keras' ``train_step``, Lightning's
  ``training_step``): ``train_step(trainer, xb, yb) -> {metric: batch mean}``.
  The default, :class:`volnet.train.steps.ClassifierStep`, is forward, ``loss``,
  backward, update; :class:`~volnet.train.steps.SegmentationStep`,
  :class:`~volnet.train.generative.GanStep` and
  :class:`~volnet.train.generative.VaeStep` plug in the same way. A step
  reports through :meth:`Trainer.check_loss` and updates through
  :meth:`Trainer.apply_gradients` (grad_hook, gradient-norm check, optimizer);
  its ``validate(trainer, val)`` gives the epoch's ``val_*`` logs and its
  ``state_dict()`` (an RNG, say) is checkpointed with the trainer. Several
  optimizers are one :class:`volnet.train.optim_group.OptimizerGroup`.

* ``train_batches`` is a :class:`volnet.data.BatchIterator` (seeded, optionally
  sharded with ``shard=(rank, world_size)``); ``val`` is a (float images,
  labels) pair or a BatchIterator, evaluated after every epoch.
* Callbacks (:mod:`volnet.train.callbacks`) get ``on_train_begin(trainer)``,
  ``on_batch_end(trainer, logs)``, ``on_epoch_end(trainer, logs)`` and
  ``on_train_end(trainer, logs)``. Batch logs: ``epoch, batch, step``, the
  step's metrics (classifier: ``loss, accuracy``), ``images_per_s, lr``; epoch
  logs hold the metrics' epoch means and add the step's ``val_*`` values (the
  classifier's ``val_loss, val_accuracy``) and ``time``; all values are plain
  Python numbers. ``epoch`` counts from 1.
* ``trainer.stop()`` (thread-safe) ends training after the current batch;
  ``trainer.pause()`` / ``trainer.resume()`` hold it between batches. A
  callback may also call ``trainer.stop()``.
* ``grad_hook(named_grads)`` is called after backward and before the update
  with a list of (name, gradient array); it may change the arrays in place
  (an MPI allreduce that averages them, whose buckets may already be in flight).
  A step that updates parts of the network in turn (the GAN) calls it once per part.
* ``accumulate=K`` splits each batch into K micro-batches (sizes differing by
  at most one), runs forward and backward on each (``backward(accumulate=True)``
  after the first, each loss weighted by its share of the batch) and steps
  once: the same gradient as the whole batch at 1/K of the activation memory
  (equal without batch norm, whose statistics then cover one micro-batch).
  Backward passes but the last run inside ``grad_hook.no_sync()`` when the hook
  has one, so a data-parallel reducer sends only the accumulated gradients.
  Steps that accumulate (classifier, segmentation) loop over
  :meth:`Trainer.micro_batches`; the GAN and VAE steps refuse ``accumulate > 1``.
* ``is_main=False`` silences the progress bar and makes checkpoint callbacks
  do nothing (only rank 0 writes).
* ``trainer.net``, ``trainer.optimizer``, ``trainer.history``,
  ``trainer.epoch`` (completed epochs), ``trainer.step`` (completed updates)
  are public; ``trainer.state_dict()`` is what checkpoints save and
  :func:`volnet.io.checkpoint.resume` restores. Resuming from a checkpoint of
  epoch k (or mid-epoch) and training to epoch n gives the same weights, bit
  for bit, as an uninterrupted run (same machine, same BLAS thread count).
* A NaN/inf loss or gradient norm raises :class:`TrainingDivergedError`
  *before* the update, so the network keeps its last finite weights; the
  message gives step, epoch, batch, the last finite loss and where NaN/inf
  first appeared. ``divergence_factor=k`` also stops when a loss exceeds k
  times the first one.
* Mid-epoch resume counts examples consumed (``trainer.seen``), not batches,
  so a checkpoint taken with one world size resumes with another.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time

import numpy as np

from volnet.errors import ConfigError, NonFiniteError, TrainingDivergedError
from volnet.functional.loss import softmax_cross_entropy
from volnet.runtime.thread_policy import auto_threads
from volnet.train.evaluation import locate_nonfinite
from volnet.train.steps import ClassifierStep

SHORT = {"accuracy": "acc", "pixel_accuracy": "pix_acc"}   # progress-bar names


class History(dict):
    """Per-epoch metrics: ``history["val_accuracy"][-1]``; keys as in the epoch logs."""

    def append(self, logs: dict) -> None:
        for key, value in logs.items():
            self.setdefault(key, []).append(value)


def _check_data(batches, val) -> None:
    """Refuse, before the first step, data that would train nothing or fail an epoch later."""
    if len(batches.x) == 0:
        raise ConfigError("fit: the training data holds 0 examples (N = 0); nothing to train on")
    if batches.num_batches(0) == 0:
        raise ConfigError(f"fit: {len(batches.x)} examples make no batch of {batches.batch_size} "
                          "with drop_last=True; lower batch_size or set drop_last=False")
    if isinstance(val, (tuple, list)) and len(val) == 2:
        x_val = np.asarray(val[0]) if not hasattr(val[0], "shape") else val[0]
        if tuple(x_val.shape[1:]) != tuple(batches.x.shape[1:]):
            raise ConfigError(f"fit: val images have shape {tuple(x_val.shape[1:])} per example "
                              f"but the training images {tuple(batches.x.shape[1:])}; the val "
                              "option must hold images like the training data")


class Trainer:
    """Runs epochs of forward, loss, backward, (hook), update; evaluates; calls callbacks.

    Args:
        net: the network (any Layer producing class scores).
        optimizer: an :class:`volnet.train.optim.Optimizer` or an
            :class:`volnet.train.optim_group.OptimizerGroup`.
        loss: ``loss(scores, labels) -> (value, dscores)`` (the classifier step's).
        train_step: what one update does; default ``ClassifierStep()``.
        callbacks: objects with any of the ``on_*`` methods listed above.
        grad_hook: ``hook(named_grads)`` run between backward and the update.
        schedule: a learning-rate schedule stepped after each epoch (its
            ``step`` gets ``val_loss`` when it is a ReduceLROnPlateau), or after
            each update when its ``per_step`` is True.
        is_main: False on ranks other than 0: no output, no checkpoint files.
        progress: show a tqdm progress bar (only when ``is_main``).
        log_epochs: print one line per epoch to stderr (default: as ``progress``).
        metadata: extra JSON saved in checkpoints (preprocessing, class names).
        divergence_factor: also stop (TrainingDivergedError) when a batch loss
            exceeds this multiple of the first batch loss (Keras-style guard).
        accumulate: micro-batches per batch (gradient accumulation); 1 = none.
        comm: a communicator: validation arrays are then split over the ranks
            and the metrics reduced (see :func:`volnet.train.evaluation.evaluate`).
    """

    def __init__(self, net, optimizer, loss=softmax_cross_entropy, *, callbacks=(),
                 grad_hook=None, schedule=None, is_main: bool = True, progress: bool = True,
                 metadata: dict | None = None, divergence_factor: float | None = None,
                 log_epochs: bool | None = None, accumulate: int = 1, comm=None,
                 train_step=None) -> None:
        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise ConfigError(f"accumulate must be a whole number of micro-batches >= 1, "
                              f"got {accumulate!r}")
        self.net, self.optimizer, self.loss = net, optimizer, loss
        self.accumulate, self.comm = accumulate, comm
        self.train_step = train_step if train_step is not None else ClassifierStep()
        if accumulate > 1 and not getattr(self.train_step, "accumulates", False):
            raise ConfigError(f"{type(self.train_step).__name__} does not split batches; "
                              "accumulate works with the classifier and segmentation steps")
        self.callbacks = list(callbacks)
        self.grad_hook, self.schedule = grad_hook, schedule
        self.is_main, self.progress = bool(is_main), bool(progress)
        self.log_epochs = self.progress if log_epochs is None else bool(log_epochs)
        self.metadata = dict(metadata or {})
        self.divergence_factor = divergence_factor
        self.first_loss = None
        self.history = History()
        self.epoch = 0            # completed epochs
        self.step = 0             # completed updates
        self.batch = 0            # completed batches of the running epoch
        self.seen = 0             # examples of the running epoch consumed by all ranks
        self.last_loss = None     # last finite training loss
        self.batches_config = None
        self._running = _fresh_running()
        self._stop = threading.Event()
        self._go = threading.Event()
        self._go.set()

    # ---- control from outside (thread-safe) ------------------------------------
    def stop(self) -> None:
        """End training after the current batch (``fit`` returns normally)."""
        self._stop.set()
        self._go.set()

    def pause(self) -> None:
        """Hold training between batches until :meth:`resume` or :meth:`stop`."""
        self._go.clear()

    def resume(self) -> None:
        """Continue after :meth:`pause`."""
        self._go.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # ---- the loop ------------------------------------------------------------------
    def fit(self, batches, epochs: int, val=None) -> History:
        """Train until ``epochs`` epochs are complete (counting epochs already done).

        Returns the history; raises TrainingDivergedError on NaN/inf.
        """
        if epochs < 1:
            raise ConfigError(f"fit: epochs must be >= 1, got {epochs}")
        _check_data(batches, val)
        self._stop.clear()
        self.batches_config = batches.config()
        # what vn.save records so the CLI preprocesses new images as these batches were
        if "preprocessing" not in self.metadata and hasattr(batches, "preprocessing"):
            self.metadata["preprocessing"] = batches.preprocessing()
        if not getattr(self.net, "preprocessing", None) and self.metadata.get("preprocessing"):
            self.net.preprocessing = self.metadata["preprocessing"]
        self._call("on_train_begin", self)
        logs = {}
        with auto_threads():    # BLAS + compiled-kernel threads: the cores nobody else uses
            while self.epoch < epochs and not self.stopped:
                logs = self._run_epoch(batches, epochs)
                if self.stopped and self.batch:       # stopped mid-epoch: no epoch-end logs
                    break
                logs.update(self._validate(val))
                self._end_epoch(logs)
        self._call("on_train_end", self, logs)
        return self.history

    def _run_epoch(self, batches, epochs: int) -> dict:
        skip = min(self.seen, len(batches.x))
        bar = self._bar(batches.num_batches(skip), epochs)
        start = time.perf_counter()
        run = self._running
        for xb, yb in batches.batches(self.epoch, skip=skip):
            self._go.wait()
            if self.stopped:
                break
            t0 = time.perf_counter()
            metrics = self._train_step(xb, yb)
            self.seen += batches.examples_per_step
            dt = time.perf_counter() - t0
            n = len(xb)
            for key, value in metrics.items():
                run["sums"][key] = run["sums"].get(key, 0.0) + value * n
            run["count"] += n
            run["time"] += dt
            logs = {"epoch": self.epoch + 1, "batch": self.batch, "step": self.step,
                    **metrics, "images_per_s": n * batches.world_size / max(dt, 1e-9),
                    "lr": self.optimizer.lr}
            if bar is not None:
                bar.set_postfix({SHORT.get(k, k): f"{v / run['count']:.4f}"
                                 for k, v in run["sums"].items()}
                                | {"img_s": f"{logs['images_per_s']:.0f}"}, refresh=False)
                bar.update(1)
            self._call("on_batch_end", self, logs)
        if bar is not None:
            bar.close()
        count = max(run["count"], 1)
        return {"epoch": self.epoch + 1, "step": self.step,
                **{k: v / count for k, v in run["sums"].items()},
                "images_per_s": run["count"] * batches.world_size / max(run["time"], 1e-9),
                "lr": self.optimizer.lr, "time": time.perf_counter() - start}

    def _train_step(self, xb: np.ndarray, yb: np.ndarray) -> dict:
        # overflow is detected by check_loss / apply_gradients and reported as
        # TrainingDivergedError, not as warnings
        with np.errstate(over="ignore", invalid="ignore"):
            metrics = self.train_step(self, xb, yb)
        self.step += 1
        self.batch += 1
        if self.schedule is not None and self.schedule.per_step:
            self.schedule.step()
        if "loss" in metrics:
            self.last_loss = metrics["loss"]
        return metrics

    # ---- what steps call -------------------------------------------------------------
    def micro_batches(self, xb: np.ndarray, yb: np.ndarray, mass=len):
        """Yield ``(x, y, weight, accumulate)`` for the ``accumulate`` micro-batches of a batch.

        Sizes differ by at most one (a short last batch splits too); ``weight`` is the
        micro-batch's share of the batch by ``mass`` (default: examples; the segmentation
        step counts labelled pixels), so weighting each micro-batch's mean loss by it gives
        the whole batch's; ``accumulate`` is False for the first (its backward overwrites
        gradients) and True after it. All but the last run inside ``grad_hook.no_sync()``
        when the hook has one.
        """
        parts = [p for p in np.array_split(np.arange(len(yb)), self.accumulate) if len(p)]
        if len(parts) == 1:
            yield xb, yb, 1.0, False
            return
        total = float(mass(yb)) or 1.0
        hold = getattr(self.grad_hook, "no_sync", None)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            x, y = xb[part[0]:part[-1] + 1], yb[part[0]:part[-1] + 1]
            with hold() if hold is not None and not last else contextlib.nullcontext():
                yield x, y, float(mass(y)) / total, i > 0

    def compute_loss(self, loss_fn, scores: np.ndarray, labels: np.ndarray, xb: np.ndarray):
        """``loss_fn(scores, labels)`` -> (value, dscores), stopping on NaN/inf or blow-up."""
        try:
            loss, dscores = loss_fn(scores, labels)
        except NonFiniteError:
            loss, dscores = math.nan, None
        self.check_loss(loss, xb)
        return loss, dscores

    def check_loss(self, loss: float, xb: np.ndarray | None = None) -> None:
        """Raise TrainingDivergedError (before any update) for a NaN/inf loss, or one above
        ``divergence_factor`` x the first."""
        if not math.isfinite(loss):
            where = locate_nonfinite(self.net, xb) if xb is not None else ""
            self._diverged(f"loss became {loss}{where}")
        if self.first_loss is None:
            self.first_loss = loss
        elif self.divergence_factor and loss > self.divergence_factor * self.first_loss:
            self._diverged(f"loss {loss:.4g} exceeds {self.divergence_factor} x the first "
                           f"loss {self.first_loss:.4g}")

    def apply_gradients(self, part: str | None = None) -> None:
        """grad_hook, gradient-norm check and the optimizer's update, for every trainable
        parameter (or those of sub-network ``part``, e.g. "discriminator")."""
        named = [(n, p, g) for n, p, g in self.net.named_params(trainable_only=True)
                 if part is None or n.startswith(part + ".")]
        if self.grad_hook is not None:
            self.grad_hook([(n, g) for n, _, g in named])
        norm = math.sqrt(sum(float(np.vdot(g, g)) for _, _, g in named))
        if not math.isfinite(norm):
            self._diverged(f"gradient norm{f' of the {part}' if part else ''} became {norm}")
        self.optimizer.step({n: p for n, p, _ in named}, {n: g for n, _, g in named})

    def _diverged(self, what: str) -> None:
        raise TrainingDivergedError(
            f"training diverged at step {self.step + 1} (epoch {self.epoch + 1}, batch "
            f"{self.batch + 1}): {what}; last finite loss {self.last_loss}. The weights are "
            f"those before this step. Lower the learning rate (now {self.optimizer.lr}) or "
            "check the input normalisation. To find the first layer that produced a NaN/inf, "
            "run again in anomaly mode: volnet train --detect-anomaly, or wrap the training in "
            "with vn.detect_anomaly():.")

    def _validate(self, val) -> dict:
        if val is None:
            return {}
        return self.train_step.validate(self, val)

    def _end_epoch(self, logs: dict) -> None:
        self.epoch += 1
        self.batch = self.seen = 0
        self._running = _fresh_running()
        if self.schedule is not None and not self.schedule.per_step:
            metric = logs.get("val_loss", logs.get("loss"))
            self.schedule.step(metric)
        self.history.append(logs)
        if self.is_main and self.log_epochs:
            shown = set(getattr(self.train_step, "metrics", ())) | {
                k for k in logs if k.startswith("val_")}
            text = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in shown)
            print(f"epoch {self.epoch}: {text} ({logs['time']:.1f} s, "
                  f"{logs['images_per_s']:.0f} images/s)", file=sys.stderr, flush=True)
        self._call("on_epoch_end", self, logs)

    def _bar(self, total: int, epochs: int):
        if not (self.is_main and self.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {self.epoch + 1}/{epochs}", unit="batch",
                    leave=False, file=sys.stderr, dynamic_ncols=True)

    def _call(self, event: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(*args)

    # ---- state for checkpoints and resume --------------------------------------------
    def state_dict(self) -> dict:
        """Everything besides the weights that resuming needs (JSON plus optimizer arrays)."""
        rngs = {path: layer.rng.bit_generator.state
                for path, layer in self.net.named_layers() if hasattr(layer, "rng")}
        return {"epoch": self.epoch, "step": self.step, "batch": self.batch,
                "seen": self.seen, "last_loss": self.last_loss, "first_loss": self.first_loss,
                "running": dict(self._running),
                "history": dict(self.history), "layer_rngs": rngs,
                "batches": self.batches_config,
                "schedule": self.schedule.state_dict() if self.schedule else None,
                "train_step": (self.train_step.state_dict()
                               if hasattr(self.train_step, "state_dict") else None),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore counters, history, RNG states, optimizer and schedule state."""
        self.epoch, self.step, self.batch = int(state["epoch"]), int(state["step"]), int(state["batch"])
        self.seen = int(state.get("seen", 0))
        self.last_loss = state.get("last_loss")
        self.first_loss = state.get("first_loss")
        self._running = _restored_running(state.get("running"))
        self.history = History(state.get("history") or {})
        layers = dict(self.net.named_layers())
        for path, rng_state in (state.get("layer_rngs") or {}).items():
            if path in layers and hasattr(layers[path], "rng"):
                layers[path].rng.bit_generator.state = rng_state
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None and state.get("schedule"):   # after: it may set the lr
            self.schedule.load_state_dict(state["schedule"])
        if state.get("train_step") is not None and hasattr(self.train_step, "load_state_dict"):
            self.train_step.load_state_dict(state["train_step"])
        self.batches_config = state.get("batches")


def _fresh_running() -> dict:
    """The running epoch's sums: metric x examples, examples, seconds."""
    return {"sums": {}, "count": 0, "time": 0.0}


def _restored_running(saved: dict | None) -> dict:
    """The running sums of a checkpoint; those written before train steps (loss, correct,
    count, time) are converted."""
    if not saved:
        return _fresh_running()
    if "sums" in saved:
        return {"sums": dict(saved["sums"]), "count": int(saved["count"]),
                "time": float(saved["time"])}
    sums = {"loss": float(saved.get("loss", 0.0)), "accuracy": float(saved.get("correct", 0))}
    return {"sums": sums, "count": int(saved.get("count", 0)), "time": float(saved.get("time", 0.0))}
