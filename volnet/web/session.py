"""One live training run shared by every open tab: the network, its history, its controls.

Training runs in a background thread through volnet's own trainer (the same
code path as ``volnet train``); this object only hooks into its batch-end
callback to record metrics, to pause (the callback waits) and to publish a
snapshot of the weights. The page's views read that snapshot, never the
network being trained, so a request can never disturb a training step.

Each request reads one consistent :class:`Snapshot` through :meth:`DemoSession.read`:
the published network, the choice it was built from (kind, input shape, padding) and the
input transform of that choice, all taken under the session's lock and held for the
whole computation. A concurrent ``POST /api/net`` waits for it, so a request never feeds
one network's inputs to another network (the race that made 73 of 2,000 reads fail with
"Linear(in_features=676) expected 676, got 900" while the network was being switched).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from volnet.data.batches import BatchIterator
from volnet.data.datasets import Dataset
from volnet.errors import ConfigError, StateError
from volnet.train.evaluation import evaluate
from volnet.train.optim import Adam
from volnet.train.trainer import Trainer
from volnet.web.layer_stats import LayerStats
from volnet.web.netspec import check_training_memory
from volnet.web.networks import NetChoice, choose

IDLE, TRAINING, PAUSED, DONE, FAILED = "idle", "training", "paused", "done", "failed"


@dataclass
class Settings:
    """Training settings of the demo (defaults reach >90% held-out within a few hundred steps).

    Attributes:
        lr: Adam learning rate.
        batch_size: Examples per step.
        epochs: Passes over the 7,000 training digits before the run ends.
        eval_every: Steps between held-out evaluations.
        eval_size: Held-out digits used for the live accuracy (all 1,000 at the end of an epoch).
        seed: Seed of the initial weights and of the batch order.
    """

    lr: float = 3e-3
    batch_size: int = 32
    epochs: int = 5
    eval_every: int = 25
    eval_size: int = 500
    seed: int = 0

    def updated(self, values: dict) -> Settings:
        """A copy with ``lr`` / ``batch_size`` / ``epochs`` replaced, each range-checked."""
        ranges = {"lr": (1e-5, 1.0, float), "batch_size": (1, 512, int), "epochs": (1, 50, int)}
        new = Settings(**self.__dict__)
        for key, value in values.items():
            if key not in ranges:
                raise ConfigError(f"unknown setting {key!r}; settable: {', '.join(ranges)}")
            low, high, kind = ranges[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (kind is int and float(value) != int(value)) or not low <= value <= high:
                raise ConfigError(f"{key} must be a {kind.__name__} between {low} and {high}, "
                                  f"got {value!r}")
            setattr(new, key, kind(value))
        return new


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (N, C, H, W) images equally on each side up to ``size`` x ``size``."""
    extra = size - x.shape[-1]
    if extra <= 0:
        return x
    before = extra // 2
    return np.pad(x, ((0, 0), (0, 0), (before, extra - before), (before, extra - before)))


class History:
    """Append-only metric series; tabs ask for what came after the index they have."""

    def __init__(self) -> None:
        self.train: list[dict] = []   # {"step", "epoch", "loss", "acc"} per step
        self.held_out: list[dict] = []   # {"step", "epoch", "acc", "loss"} per evaluation

    def since(self, train_from: int, held_from: int) -> dict:
        return {"train": self.train[train_from:], "held_out": self.held_out[held_from:],
                "train_next": len(self.train), "held_out_next": len(self.held_out)}


@dataclass(frozen=True)
class Snapshot:
    """What one request reads: the published network and the choice it belongs to.

    Attributes:
        net: the published weights (the views' copy, never the net being trained).
        choice: the :class:`~volnet.web.networks.NetChoice` the net was built from.
        data: the session's dataset (its mean and std normalise the inputs).
        version: the session's version when the snapshot was taken.
    """

    net: object
    choice: NetChoice
    data: Dataset
    version: int

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 1, 28, 28) -> the normalised float32 input of this snapshot's net."""
        return prepared_inputs(images, self.choice, self.data)


def prepared_inputs(images: np.ndarray, choice: NetChoice, data: Dataset) -> np.ndarray:
    """uint8 digits (N, 1, 28, 28) -> the normalised float32 input of ``choice``'s net."""
    # Pad before normalising, exactly as the training batches are built in ``_run``.
    images = pad_to(images, choice.input_size)
    return (images.astype(np.float32) / 255.0 - data.mean[0]) / data.std[0]


class DemoSession:
    """The demo's single training run and everything the page reads from it.

    Args:
        data: The dataset (the bundled MNIST sample).
        settings: Training settings; the page may change lr, batch size and epochs.
        max_bytes: memory budget of a training run (default ``$VOLNET_MAX_BYTES`` or
            2 GiB; see :mod:`volnet.limits`).
    """

    def __init__(self, data: Dataset, settings: Settings | None = None,
                 max_bytes: int | str | None = None) -> None:
        self.data, self.settings = data, settings or Settings()
        self.max_bytes = max_bytes
        self._lock = threading.RLock()        # guards state, history, choice and the snapshot
        self._control = threading.RLock()     # serialises network changes and starts
        self._thread: threading.Thread | None = None
        self._trainer = None
        self.state, self.error, self.version, self.run = IDLE, "", 0, 0
        self.images_per_s, self.step, self.epoch = 0.0, 0, 0
        self.history = History()
        self.select("lenet5")

    # ---- the network ----------------------------------------------------------
    def select(self, kind: str, spec: str = "") -> NetChoice:
        """Build a new network (stopping any run) and make it the current one.

        Concurrent calls run one after the other (build, stop, swap), so a request
        never sees the network of one call with the snapshot of another.
        """
        with self._control:
            choice = choose(kind, spec, seed=self.settings.seed, max_bytes=self.max_bytes,
                            batch_size=self.settings.batch_size)   # raises before anything changes
            self._halt()
            with self._lock:
                self.choice = choice
                self.view_net = choice.net.copy()   # what requests read; refreshed by snapshots
                self._clear()
            return choice

    def reset(self) -> None:
        """Stop training and start over from freshly initialised weights of the same net."""
        self.select(self.choice.kind, self.choice.spec)

    def _run(self, trainer) -> None:
        """The training thread: ``Trainer.fit`` over the sample, then mark the run finished."""
        data, choice = self.data, self.choice
        batches = BatchIterator(pad_to(data.x_train, choice.input_size), data.y_train,
                                self.settings.batch_size, seed=self.settings.seed,
                                mean=data.mean, std=data.std)
        try:
            trainer.fit(batches, epochs=self.settings.epochs,
                        val=(self.inputs(data.x_test), data.y_test))
            final, error = (IDLE if trainer.stopped else DONE), ""
        except Exception as err:  # noqa: BLE001 - any failure is shown on the page; the server lives on
            final, error = FAILED, f"{type(err).__name__}: {err}"
        with self._lock:
            if self._trainer is trainer:   # not superseded by a reset meanwhile
                self.publish()
                self.state, self.error, self.version = final, error, self.version + 1

    def publish(self) -> None:
        """Copy the training weights into the snapshot the views read (training thread only)."""
        with self._lock:
            self.view_net.load_state_dict(self.choice.net.state_dict())
            self.version += 1

    def checkpoint_bytes(self) -> tuple[str, bytes]:
        """(network kind, the published weights as a safetensors checkpoint with the
        preprocessing they need), read from one snapshot."""
        import os
        import tempfile

        from volnet.io.checkpoint import save
        from volnet.train.recipe import preprocessing_of

        def write(snap: Snapshot) -> str:
            # What ``volnet train`` records, plus the zero border that pads digits up to 32x32.
            preprocessing = {**preprocessing_of(self.data, snap.choice.input_shape),
                             "zero_pad": (snap.choice.input_size - self.data.input_shape[-1]) // 2}
            save(path, snap.net, preprocessing=preprocessing)
            return snap.choice.kind

        with tempfile.TemporaryDirectory(prefix="volnet-demo-") as folder:
            path = os.path.join(folder, "demo.safetensors")   # a fresh private folder
            kind = self.read(write)
            with open(path, "rb") as f:
                return kind, f.read()

    def _clear(self) -> None:
        self.state, self.error = IDLE, ""
        self.images_per_s, self.step, self.epoch = 0.0, 0, 0
        self.history, self.layer_stats = History(), LayerStats()
        self.version, self.run = self.version + 1, self.run + 1

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 1, 28, 28) -> the normalised float32 input of the current net
        (the training thread's; requests use :meth:`Snapshot.inputs` of their snapshot)."""
        return prepared_inputs(images, self.choice, self.data)

    def read(self, fn):
        """``fn(snapshot)``: one consistent :class:`Snapshot` (network, choice, inputs), held
        for the whole call; neither a publish nor a network switch can happen meanwhile."""
        with self._lock:
            return fn(Snapshot(self.view_net, self.choice, self.data, self.version))

    # ---- controls ---------------------------------------------------------------
    def start(self, settings: dict | None = None) -> None:
        """Start training the current net (from its current weights); resume if paused.

        The net's training memory at the chosen batch size (parameters, optimizer
        state and activations) must fit the budget (``max_bytes``).
        """
        with self._control, self._lock:
            if self.state == PAUSED:
                return self.resume()
            if self.state == TRAINING:
                raise StateError("training is already running; pause or reset it first")
            if self.state in (DONE, FAILED):
                raise StateError(f"the run has {'finished' if self.state == DONE else 'failed'}; "
                                 "reset to train again")
            new = self.settings.updated(settings) if settings else self.settings
            check_training_memory(self.choice.net, self.choice.input_shape, new.batch_size,
                                  len(self.data.y_test), self.max_bytes)
            self.settings = new
            self._trainer = make_trainer(self.choice.net, self.settings, _Recorder(self),
                                         self.layer_stats)
            self.state, self.version = TRAINING, self.version + 1
            self._thread = threading.Thread(target=self._run, args=(self._trainer,),
                                            name="volnet-demo-train", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        with self._lock:
            if self.state != TRAINING:
                raise StateError(f"nothing to pause: training is {self.state}")
            self._trainer.pause()
            self.state, self.version = PAUSED, self.version + 1

    def resume(self) -> None:
        with self._lock:
            if self.state != PAUSED:
                raise StateError(f"nothing to resume: training is {self.state}")
            self.state, self.version = TRAINING, self.version + 1
            self._trainer.resume()

    def _halt(self) -> None:
        """Ask the training thread to stop and wait for it (it checks at every batch end)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._trainer.stop()
            thread.join()
        self._thread = self._trainer = None

    def close(self) -> None:
        """Stop training; called when the server shuts down."""
        self._halt()

    # ---- status -----------------------------------------------------------------------
    def status(self, train_from: int = 0, held_from: int = 0) -> dict:
        """State, counters and the metric history after the given indices."""
        with self._lock:
            return {"state": self.state, "error": self.error, "version": self.version,
                    "run": self.run,
                    "step": self.step, "epoch": self.epoch,
                    "images_per_s": round(self.images_per_s, 1),
                    "settings": dict(self.settings.__dict__),
                    "network": self.choice.kind,
                    **self.history.since(max(0, train_from), max(0, held_from))}


def make_trainer(net, settings: Settings, *callbacks) -> Trainer:
    """The same ``Trainer`` ``volnet train`` uses: Adam, softmax cross-entropy, no progress bar."""
    return Trainer(net, Adam(lr=settings.lr), callbacks=list(callbacks), progress=False,
                   metadata={"source": "volnet demo"})


class _Recorder:
    """Trainer callback: records metrics, evaluates held-out digits, publishes snapshots."""

    def __init__(self, session: DemoSession) -> None:
        self.session, self.last_publish = session, 0.0

    def on_batch_end(self, trainer, logs: dict) -> None:
        session, settings = self.session, self.session.settings
        with session._lock:
            if session._trainer is not trainer:   # a reset replaced this run
                return trainer.stop()
            session.history.train.append({"step": logs["step"], "epoch": logs["epoch"],
                                          "loss": round(logs["loss"], 5),
                                          "acc": round(logs["accuracy"], 4)})
            session.step, session.epoch = logs["step"], logs["epoch"]
            rate = session.images_per_s
            session.images_per_s = logs["images_per_s"] if rate == 0 else 0.9 * rate + 0.1 * logs["images_per_s"]
        if logs["step"] % settings.eval_every == 0:
            self._evaluate(logs, settings.eval_size)
        elif session.state != TRAINING or time.monotonic() - self.last_publish > 0.5:
            # paused (or stopping): the trainer holds after this batch, so publish it now
            session.publish()
            self.last_publish = time.monotonic()

    def _evaluate(self, logs: dict, size: int) -> None:
        session = self.session
        with session._lock:
            session.publish()
            x = session.inputs(session.data.x_test[:size])
            result = evaluate(session.view_net, x, session.data.y_test[:size])
            session.history.held_out.append({"step": logs["step"], "epoch": logs["epoch"],
                                             "loss": round(result["loss"], 5),
                                             "acc": round(result["accuracy"], 4), "size": size})
        self.last_publish = time.monotonic()

    def on_epoch_end(self, trainer, logs: dict) -> None:
        session = self.session
        with session._lock:
            if session._trainer is trainer and "val_accuracy" in logs:
                session.history.held_out.append({
                    "step": logs["step"], "epoch": logs["epoch"], "loss": round(logs["val_loss"], 5),
                    "acc": round(logs["val_accuracy"], 4), "size": len(session.data.y_test)})
