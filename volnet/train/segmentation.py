"""``volnet train fcn|dilated|dilated-context``: train a segmenter on the digit scenes or on
an images/ + masks/ folder, through the one Trainer with
:class:`~volnet.train.steps.SegmentationStep`.

Adam with a cosine-decayed learning rate, per-pixel softmax cross-entropy that
skips the 255 (ignore) pixels; a resumable checkpoint after every epoch whose
preprocessing records ``"task": "segmentation"``, the class names and the ignore
index, which ``volnet segment`` and ``volnet evaluate`` read. The scenes are the
same for every model and seed (data seed 0), so runs differ only by their own seed.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass

import numpy as np

from volnet.data.batches import BatchIterator
from volnet.errors import CheckpointError, ConfigError, DataError

SEGMENTERS = ("fcn", "dilated", "dilated-context")
DEFAULTS = {"epochs": 8, "batch_size": 16, "lr": 3e-3, "seed": 0}
# dilated-context is trained as Yu & Koltun did: the front-end first (DEFAULTS), then the
# context module on it, the whole net at a lower rate for a few more epochs (joint training
# from scratch leaves the digit classes dead behind the module's ReLUs; README)
CONTEXT_STAGE = {"epochs": 4, "lr": 1e-3}
SCENES = {"train": 2000, "test": 500}
IGNORE = 255


@dataclass
class SegmentationResult:
    net: object
    history: dict
    path: str
    mean_iou: float
    class_iou: list
    pixel_accuracy: float
    seconds: float
    class_names: list
    finished: bool = True


def build_segmenter(model: str, num_classes: int, in_channels: int, seed: int = 0):
    """The zoo segmenter ``model`` ("fcn", "dilated", "dilated-context")."""
    from volnet.models.dilated import dilated, dilated_context
    from volnet.models.fcn import fcn

    builders = {"fcn": fcn, "dilated": dilated, "dilated-context": dilated_context}
    key = model.replace("_", "-")
    if key not in builders:
        raise ConfigError(f"unknown segmenter {model!r}; choose one of {', '.join(SEGMENTERS)}")
    return builders[key](num_classes=num_classes, in_channels=in_channels, seed=seed)


def check_fits(net, input_shape, num_classes: int) -> None:
    """The segmenter must return (K, H, W) for these images: sides divisible by its stride."""
    from volnet.errors import ShapeError

    _, h, w = input_shape
    try:
        out = tuple(net.output_shape(tuple(input_shape)))
    except (ShapeError, ConfigError) as err:
        out = str(err)
    if out != (num_classes, h, w):
        raise ConfigError(f"this segmenter cannot label {h}x{w} images pixel for pixel (it "
                          f"gives {out}); it needs sides divisible by its stride (8 for fcn, "
                          "4 for dilated and dilated-context): crop or pad the images and "
                          "masks alike")


def init_from(net, path: str) -> str:
    """Copy into ``net`` every weight of checkpoint ``path`` with the same name and shape;
    refuse a checkpoint that shares none, or one whose shared names differ in shape."""
    from volnet.io.checkpoint import load

    source = load(path).state_dict()
    target = net.state_dict()
    shared = sorted(set(source) & set(target))
    clash = [k for k in shared if source[k].shape != target[k].shape]
    if not shared or clash:
        raise ConfigError(f"--init {path}: " + (f"{clash[0]} is {source[clash[0]].shape} there "
                          f"but {target[clash[0]].shape} here" if clash else "no weight names in "
                          "common with this model") + "; give a checkpoint of the same "
                          "front-end (volnet train dilated for dilated-context)")
    net.load_state_dict({**target, **{k: source[k] for k in shared}})
    fresh = sorted({k.split(".")[0] for k in set(target) - set(source)})
    return (f"initialised {len(shared)} of {len(target)} tensors from {path}"
            + (f"; fresh: {', '.join(fresh)}" if fresh else ""))


def load_segmentation_data(data: str = "scenes", val_fraction: float | None = None,
                           seed: int = 0):
    """"scenes" (the digit scenes) or an images/ + masks/ folder, as a Dataset of masks."""
    from volnet.data.scenes import scene_dataset
    from volnet.data.segmentation_folder import is_segmentation_folder, read_segmentation_folder

    if data == "scenes":
        if val_fraction is not None:
            raise ConfigError("the scenes come with their own held-out split (from held-out "
                              "digits); drop --val-fraction")
        return scene_dataset(SCENES["train"], SCENES["test"])
    if not os.path.isdir(data):
        raise DataError(f"{data}: neither 'scenes' nor a folder; give a folder with "
                        "images/ + masks/ (or train/ and test/ holding them)")
    if not is_segmentation_folder(data):
        raise DataError(f"{data} has no images/ + masks/ folders (nor train/images, "
                        "train/masks); a segmentation folder holds images/NAME.png with "
                        "masks/NAME.png")
    return read_segmentation_folder(data, val_fraction, seed)


def segmentation_preprocessing(data_set, data: str) -> dict:
    """What the checkpoint records so segment/evaluate feed images as training did."""
    return {"input_shape": list(data_set.input_shape), "scale": "x / 255", "dataset": data,
            "mean": list(data_set.mean), "std": list(data_set.std),
            "class_names": list(data_set.class_names), "task": "segmentation",
            "ignore_index": IGNORE}


def _resumed_options(path: str, state: dict, given: dict, defaults: dict) -> dict:
    """Batch size, seed and lr of the run being resumed; a contradicting option is refused."""
    batches = state.get("batches") or {}
    schedule = state.get("schedule") or {}
    saved = {"batch_size": batches.get("batch_size"), "seed": batches.get("seed"),
             "lr": schedule.get("base_lr")}
    for key, value in given.items():
        if value is not None and saved.get(key) is not None and value != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"--resume {path} continues a run trained with {flag} "
                              f"{saved[key]}; drop {flag} (the resumed run must match an "
                              "uninterrupted one)")
    return {k: saved[k] if given[k] is None and saved.get(k) is not None else
            (defaults[k] if given[k] is None else given[k]) for k in given}


def train_segmenter(model: str, data: str = "scenes", *, epochs: int | None = None,
                    batch_size: int | None = None, lr: float | None = None,
                    seed: int | None = None, out: str | None = None, resume: str | None = None,
                    overwrite: bool = False, progress: bool = True,
                    val_fraction: float | None = None, init: str | None = None,
                    log=print) -> SegmentationResult:
    """Train ``model`` on ``data``; checkpoint every epoch; return held-out mean IoU and more.

    Args:
        model: "fcn", "dilated" or "dilated-context". Without ``init`` or ``resume``,
            "dilated-context" runs two stages: ``dilated`` with its defaults (checkpoint
            ``<out>-frontend.safetensors``), then the context net initialised from it.
        data: "scenes" (2,000 training and 500 held-out digit scenes) or a folder.
        epochs: total epochs (with ``resume``: counting those done); default 8, or 4 for
            dilated-context's second stage.
        out: checkpoint path (default ``<model>-<data>-<time>.safetensors``; an
            existing file is refused unless ``overwrite`` or it is ``resume``).
        resume: continue that checkpoint's run, bit for bit.
        val_fraction: for a single images/ + masks/ folder, the share held out.
        init: a segmentation checkpoint whose weights start the run wherever names and
            shapes match (Yu & Koltun's second stage: a trained ``dilated`` front-end under
            ``dilated-context``, whose context module then starts as the identity).
    """
    from volnet.io.checkpoint import load_checkpoint, save
    from volnet.train.callbacks import ModelCheckpoint
    from volnet.train.interrupt import stop_on_interrupt
    from volnet.train.optim import Adam
    from volnet.train.recipe import default_out_path
    from volnet.train.schedule import CosineLR
    from volnet.train.segmentation_metrics import evaluate_segmentation
    from volnet.train.steps import SegmentationStep
    from volnet.train.trainer import Trainer

    staged = model.replace("_", "-") == "dilated-context"
    defaults = {**DEFAULTS, **CONTEXT_STAGE} if staged else DEFAULTS
    epochs_given = epochs
    epochs = defaults["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if staged and init is None and resume is None:
        return _two_stages(data, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, out=out,
                           overwrite=overwrite, progress=progress, val_fraction=val_fraction,
                           log=log)
    given = {"batch_size": batch_size, "lr": lr, "seed": seed}
    ckpt = None
    if resume:
        ckpt = load_checkpoint(resume)
        if ckpt.trainer_state is None or ckpt.preprocessing.get("task") != "segmentation":
            raise CheckpointError(f"{resume} is not a resumable segmentation checkpoint "
                                  "(written by volnet train fcn|dilated|dilated-context)")
        given = _resumed_options(resume, ckpt.trainer_state, given, defaults)
        planned = (ckpt.trainer_state.get("schedule") or {}).get("t_max")
        if epochs_given is None and isinstance(planned, int) and planned >= 1:
            epochs = planned           # the run's planned length, as --help says
    else:
        given = {k: defaults[k] if v is None else v for k, v in given.items()}
    batch_size, lr, seed = given["batch_size"], given["lr"], given["seed"]
    data_set = load_segmentation_data(data, val_fraction)
    out = out or resume or default_out_path(model, data)
    if os.path.exists(out) and not overwrite and out != resume:
        raise CheckpointError(f"{out} already exists; pass another --out, --overwrite, or "
                              f"--resume {out} to continue that run")
    num_classes = data_set.num_classes
    net = build_segmenter(model, num_classes, data_set.input_shape[0], seed)
    check_fits(net, data_set.input_shape, num_classes)
    if init and not resume:
        log(init_from(net, init))
    elif init:
        raise ConfigError("--init starts a new run; a resumed run has its weights already")
    opt = Adam(lr=lr)
    prep = segmentation_preprocessing(data_set, data)
    trainer = Trainer(net, opt, train_step=SegmentationStep(num_classes, IGNORE),
                      schedule=CosineLR(opt, epochs), progress=progress, log_epochs=True,
                      callbacks=[ModelCheckpoint(out)], metadata={"preprocessing": prep})
    if resume:
        trainer.net.load_state_dict(ckpt.net.state_dict())
        trainer.load_state_dict(ckpt.trainer_state)
        trainer.schedule.t_max = epochs        # as volnet train: a finished run can be extended
        if trainer.schedule.epoch:
            opt.lr = trainer.schedule._next_lr(None)
        log(f"resumed {resume} at epoch {trainer.epoch}, step {trainer.step}")
    batches = BatchIterator(data_set.x_train, data_set.y_train, batch_size, seed=seed,
                            mean=data_set.mean, std=data_set.std)
    x_test = batches.transform(data_set.x_test)
    log(f"training {model} ({net.num_params():,} parameters) on {data_set.name}: "
        f"{len(data_set.x_train):,} images {data_set.input_shape}, {len(data_set.x_test):,} held "
        f"out, {num_classes} classes; adam lr={lr}, batch {batch_size}, {epochs} epochs; "
        f"checkpoint -> {out}")
    start = time.perf_counter()
    with stop_on_interrupt(trainer):
        history = trainer.fit(batches, epochs, val=(x_test, data_set.y_test))
    seconds = time.perf_counter() - start
    if trainer.epoch < epochs or not os.path.exists(out):
        save(out, net, trainer=trainer)
    if trainer.stopped:
        log(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.batch}; state saved to "
            f"{out}; continue with: volnet train {model} --data {shlex.quote(data)} --epochs {epochs} "
            f"--resume {shlex.quote(out)}")
    result = evaluate_segmentation(net, x_test, data_set.y_test, num_classes, IGNORE)
    return SegmentationResult(net, dict(history), out, result["mean_iou"], result["class_iou"],
                              result["pixel_accuracy"], seconds, list(data_set.class_names),
                              finished=trainer.epoch >= epochs)


def _two_stages(data: str, *, epochs: int, batch_size, lr, seed, out, overwrite: bool,
                progress: bool, val_fraction, log) -> SegmentationResult:
    """dilated-context from nothing: train the front-end, then the context net on it."""
    from volnet.train.recipe import default_out_path

    out = out or default_out_path("dilated-context", data)
    front = (out.removesuffix(".safetensors")) + \
        "-frontend.safetensors"
    if os.path.exists(front) and not overwrite:   # before any epoch; --resume of it is stage 1's
        raise CheckpointError(
            f"{front} (stage 1's front-end checkpoint) already exists. Start stage 2 from it: "
            f"volnet train dilated-context --data {shlex.quote(data)} --init "
            f"{shlex.quote(front)} --out {shlex.quote(out)}; finish an interrupted stage 1: "
            f"volnet train dilated --data {shlex.quote(data)} --resume {shlex.quote(front)}; "
            "or pass another --out, or --overwrite")
    log(f"stage 1 of 2: the dilated front-end alone ({DEFAULTS['epochs']} epochs), as Yu & "
        f"Koltun trained it before adding the context module; checkpoint -> {front}")
    first = train_segmenter("dilated", data, batch_size=batch_size, seed=seed, out=front,
                            overwrite=overwrite, progress=progress, val_fraction=val_fraction,
                            log=log)
    if not first.finished:
        log(f"then: volnet train dilated-context --data {data} --init {front} --out {out}")
        return first
    log(f"stage 1 done: held-out mean IoU {first.mean_iou:.4f}. Stage 2 of 2: the context "
        f"module on it, the whole net {epochs} epochs")
    second = train_segmenter("dilated-context", data, epochs=epochs, batch_size=batch_size,
                             lr=lr, seed=seed, out=out, overwrite=overwrite, progress=progress,
                             val_fraction=val_fraction, init=front, log=log)
    second.seconds += first.seconds
    return second


def iou_table(class_names, class_iou) -> str:
    """Per-class IoU lines for the terminal ("-" for a class neither present nor predicted)."""
    width = max(len(str(n)) for n in class_names)
    return "\n".join(f"  {name!s:<{width}}  {'-' if np.isnan(v) else f'{v:.4f}'}"
                     for name, v in zip(class_names, np.asarray(class_iou, dtype=float)))
