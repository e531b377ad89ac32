"""The main job: train a zoo model on a dataset with a good default recipe, checkpointing.

``volnet train lenet5`` calls :func:`train`. The defaults (Adam, lr 2e-3 with
cosine decay, batch 64, 10 epochs, per-channel normalisation) take LeNet-5 past
97% on the bundled sample's 1,000 held-out digits in a few minutes on two cores.
"""

from __future__ import annotations

import inspect
import math
import os
import shlex
import time
from dataclasses import dataclass

from volnet.data.batches import BatchIterator
from volnet.data.registry import load_dataset
from volnet.errors import CheckpointError, ConfigError, DataError, ShapeError
from volnet.train.callbacks import ModelCheckpoint
from volnet.train.communicator import Communicator
from volnet.train.data_parallel import data_parallel, local_batch_size
from volnet.train.evaluation import evaluate
from volnet.train.interrupt import stop_on_interrupt
from volnet.train.optim import OPTIMIZERS, make_optimizer
from volnet.train.schedule import CosineLR
from volnet.train.trainer import Trainer

DEFAULTS = {"epochs": 10, "batch_size": 64, "lr": 2e-3, "optimizer": "adam", "seed": 0}


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    net: object
    history: dict
    path: str
    accuracy: float
    seconds: float
    epochs_run: float = 0.0      # epochs (fractional) this call trained, resumed ones excluded
    epoch: float = 0.0           # where the run stands now, in epochs
    planned: int = 0             # the run's planned length (the cosine schedule's horizon)
    interrupted: bool = False    # stopped by Ctrl-C before ``planned``


def build_for_data(model: str, input_shape, num_classes: int, seed: int = 0):
    """Build zoo model ``model`` for images of ``input_shape`` and ``num_classes`` classes."""
    from volnet.models.registry import GENERATIVE, INPUT_SHAPES, MODELS, build

    if model not in MODELS:
        build(model)   # raises the ConfigError listing the names
    if model in GENERATIVE:
        raise ConfigError(f"{model} is a generative model, not a classifier: train it with "
                          f"`volnet train {'vae' if model == 'conv_vae' else 'dcgan'}`")
    accepted = inspect.signature(MODELS[model]).parameters
    wanted = {"num_classes": num_classes, "in_channels": input_shape[0], "seed": seed,
              "input_size": input_shape[1]}
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    try:
        net = build(model, **kwargs)
        out = net.output_shape(tuple(input_shape))
    except (ShapeError, ConfigError) as err:
        raise ConfigError(f"model {model} (made for input {INPUT_SHAPES.get(model)}) cannot take "
                          f"this data's images {tuple(input_shape)}: {err}. Pick a model whose "
                          "input fits, e.g. lenet5 for 28x28 digits, cifar_example for 32x32x3") from None
    if tuple(out) != (num_classes,):
        raise ConfigError(f"model {model} gives output {out} for input {tuple(input_shape)}, "
                          f"expected ({num_classes},) class scores")
    return net


def default_out_path(model: str, data: str) -> str:
    """``<model>-<data>-<UTC time>.safetensors`` in the working directory, never an existing file."""
    tag = os.path.basename(os.path.normpath(data)) or "data"
    stem = f"{model}-{tag}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, n = f"{stem}.safetensors", 1
    while os.path.exists(path):
        path, n = f"{stem}-{n}.safetensors", n + 1
    return path


def preprocessing_of(data, input_shape) -> dict:
    """What evaluate/predict need to feed the net what it was trained on."""
    return {"input_shape": list(input_shape), "scale": "x / 255", "mean": list(data.mean),
            "std": list(data.std), "class_names": list(data.class_names), "dataset": data.name}


def saved_recipe(trainer_state: dict) -> dict:
    """lr, optimizer, batch_size, seed and planned epochs (the cosine schedule's horizon) of
    the run a checkpoint's trainer state belongs to."""
    def part(key):
        value = trainer_state.get(key)
        return value if isinstance(value, dict) else {}

    opt, batches, schedule = part("optimizer"), part("batches"), part("schedule")
    names = {cls.__name__: name for name, cls in OPTIMIZERS.items()}
    hyper = opt.get("hyper") if isinstance(opt.get("hyper"), dict) else {}
    lr = schedule.get("base_lr", hyper.get("lr"))
    saved = {"lr": lr if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None,
             "optimizer": names.get(opt.get("type")) if isinstance(opt.get("type"), str) else None,
             "seed": batches.get("seed") if isinstance(batches.get("seed"), int) else None,
             "batch_size": None,
             "epochs": schedule.get("t_max") if isinstance(schedule.get("t_max"), int) else None}
    if isinstance(batches.get("batch_size"), int) and isinstance(batches.get("world_size"), int):
        saved["batch_size"] = batches["batch_size"] * batches["world_size"]
    return saved


def resolve_resume_options(path: str, trainer_state: dict, given: dict) -> dict:
    """Options for a resumed run: the saved ones; an explicit different value is refused.

    ``--resume`` promises the run an uninterrupted one would have been (bit for
    bit): the learning rate is the base of a cosine schedule saved with it, the
    batch size and seed fix the order of the remaining batches. Changing one
    midway would make ``--resume`` mean two things, so a contradiction is an
    error that says how to get either behaviour.
    """
    saved, resolved = saved_recipe(trainer_state), {}
    for key, value in given.items():
        old = saved.get(key)
        same = (value is None or old is None or
                (math.isclose(value, old, rel_tol=1e-12) if key == "lr" else value == old))
        if not same:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"--resume {path} continues a run trained with {flag} {old}; "
                              f"{flag} {value} contradicts it (the resumed run must match an "
                              f"uninterrupted one). Drop {flag} to resume that run, or start a new "
                              f"run from its weights with {flag} {value} (volnet finetune, or "
                              "vn.load and vn.fit)")
        resolved[key] = old if value is None else value
        if resolved[key] is None:
            resolved[key] = DEFAULTS[key]
    return resolved


def train(model: str, data: str = "mnist-sample", *, epochs: int | None = None,
          batch_size: int | None = None, lr: float | None = None,
          optimizer: str | None = None, seed: int | None = None,
          out: str | None = None, resume: str | None = None, overwrite: bool = False,
          progress: bool = True, log=print, comm=None, sync_bn: bool = False,
          accumulate: int = 1, overlap: bool = True) -> TrainResult:
    """Train ``model`` on ``data``; save a resumable checkpoint after every epoch.

    Args:
        model: a registry name (``volnet.models.MODELS``).
        data: a dataset name or folder (see :func:`volnet.data.registry.load_dataset`).
        epochs: the run's length, in epochs (counting resumed ones); default
            :data:`DEFAULTS`, or when resuming the checkpoint's planned length (a larger
            value extends a finished run).
        out: checkpoint path; default a new ``<model>-<data>-<time>.safetensors``.
            An existing file is refused unless ``overwrite`` (or it is ``resume``).
        batch_size, lr, optimizer, seed: default :data:`DEFAULTS`; when resuming, the
            checkpoint's, and a different explicit value is refused (ConfigError).
        resume: continue from this checkpoint (same recipe; bit-identical weights).
        comm: a :mod:`volnet.train.communicator` communicator for data-parallel
            training (default: one process). ``batch_size`` is then the global
            batch, split over the ranks; rank 0 alone logs and writes.
        sync_bn: synchronise batch-norm statistics over the ranks.
        accumulate: split each rank's batch into this many micro-batches, one
            optimizer step (and one gradient allreduce) per batch.
        overlap: start the gradient allreduce during backward (several ranks).
    """
    comm = comm or Communicator()
    if not comm.is_main:
        log = lambda *args, **kwargs: None   # only rank 0 talks
    given = {"lr": lr, "optimizer": optimizer, "batch_size": batch_size, "seed": seed}
    ckpt = None
    if resume:
        from volnet.io.checkpoint import load_checkpoint

        ckpt = load_checkpoint(resume)
        if ckpt.trainer_state is None:
            raise CheckpointError(f"{resume} holds weights only (saved without a trainer); it "
                                  "cannot resume training. Start a new run instead")
        given = resolve_resume_options(resume, ckpt.trainer_state, given)
        if epochs is None:   # the interrupted run's own length, not the default
            epochs = saved_recipe(ckpt.trainer_state)["epochs"]
    else:
        given = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
    epochs = DEFAULTS["epochs"] if epochs is None else int(epochs)
    lr, optimizer, batch_size, seed = (given[k] for k in ("lr", "optimizer", "batch_size", "seed"))
    # with several ranks an image folder is decoded lazily: each reads only its shard's files
    data_set = load_dataset(data, lazy=comm.world_size > 1, comm=comm)
    for split, images in (("training", data_set.x_train), ("held-out", data_set.x_test)):
        if len(images) == 0:
            raise DataError(f"{data}: the {split} split holds 0 images; nothing to "
                            f"{'train on' if split == 'training' else 'evaluate on'} (for an "
                            "MNIST-format folder, check the "
                            f"{'train' if split == 'training' else 't10k'}-images file)")
    shape = data_set.input_shape
    net = build_for_data(model, shape, data_set.num_classes, seed)
    opt = make_optimizer(optimizer, lr=lr, **({"momentum": 0.9} if optimizer == "sgd" else {}))
    out = comm.broadcast_json(out or resume or default_out_path(model, data))   # rank 0's name
    if os.path.exists(out) and not overwrite and out != resume:
        raise CheckpointError(f"{out} already exists; pass another --out, --overwrite, or "
                              f"--resume {out} to continue that run")
    trainer = Trainer(net, opt, schedule=CosineLR(opt, epochs), progress=progress,
                      is_main=comm.is_main, log_epochs=True,   # --quiet hides the bar only
                      callbacks=[ModelCheckpoint(out)], accumulate=accumulate, comm=comm,
                      metadata={"preprocessing": preprocessing_of(data_set, shape)})
    if resume:
        trainer.net.load_state_dict(ckpt.net.state_dict())
        trainer.load_state_dict(ckpt.trainer_state)
        # the cosine horizon follows this command's --epochs: resuming an interrupted run
        # replays it exactly, and a finished run can be extended
        trainer.schedule.t_max = epochs
        if trainer.schedule.epoch:
            opt.lr = trainer.schedule._next_lr(None)
        log(f"resumed {resume} at epoch {trainer.epoch}, step {trainer.step}")
    local_batch = local_batch_size(batch_size, comm.world_size)
    # no-op for one process
    trainer.grad_hook = data_parallel(net, comm, sync_bn=sync_bn, overlap=overlap)
    if comm.world_size > 1:
        log(f"data-parallel over {comm.world_size} MPI ranks: {local_batch} images per rank "
            f"per step, batch norm {'synchronised' if sync_bn else 'local'}")
    batches = BatchIterator(data_set.x_train, data_set.y_train, local_batch, seed=seed,
                            mean=data_set.mean, std=data_set.std,
                            shard=(comm.rank, comm.world_size))
    x_test = batches.transform_lazily(data_set.x_test)
    log(f"training {model} ({net.num_params():,} parameters) on {data_set.name}: "
        f"{len(data_set.x_train):,} images {shape}, {len(data_set.x_test):,} held out; "
        f"{optimizer} lr={lr}, batch {batch_size}, {epochs} epochs; checkpoint -> {out}")
    start, began = time.perf_counter(), _progress(trainer, batches)
    with stop_on_interrupt(trainer, enabled=comm.world_size == 1):
        history = trainer.fit(batches, epochs, val=(x_test, data_set.y_test))
    seconds = time.perf_counter() - start
    accuracy = evaluate(net, x_test, data_set.y_test, comm=comm)["accuracy"]
    if comm.is_main and (trainer.epoch < epochs or not os.path.exists(out)):   # stopped early
        from volnet.io.checkpoint import save

        save(out, net, trainer=trainer)
    interrupted = trainer.stopped and trainer.epoch < epochs
    if interrupted:
        log(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.batch}; state saved to "
            f"{out}; continue with: volnet train {model} --data {shlex.quote(data)} --epochs "
            f"{epochs} --resume {shlex.quote(out)}")
    now = _progress(trainer, batches)
    return TrainResult(net, dict(history), out, accuracy, seconds, epochs_run=now - began,
                       epoch=now, planned=epochs, interrupted=interrupted)


def _progress(trainer, batches) -> float:
    """Epochs done, with the finished part of the current one (examples seen / N)."""
    return trainer.epoch + min(trainer.seen, len(batches.x)) / max(len(batches.x), 1)
