"""``volnet train MODEL``: train a zoo model (default: the bundled MNIST sample) and save it."""

from __future__ import annotations

import os

from volnet.commands.checks import positive_int
from volnet.errors import ConfigError
from volnet.train.optim import OPTIMIZERS
from volnet.train.recipe import DEFAULTS


def add_parser(sub):
    p = sub.add_parser("train", help="train a zoo model and save a checkpoint",
                       description="Train MODEL on a dataset, print held-out accuracy and save a "
                                   "resumable checkpoint after every epoch.")
    p.add_argument("model", help="zoo model name, e.g. lenet5, cifar_example; dcgan / vae "
                                 "to train the generative models on 28x28 digits; fcn / dilated "
                                 "/ dilated-context to train a segmenter (default data: the "
                                 "64x64 digit scenes)")
    p.add_argument("--data", default="mnist-sample",
                   help="mnist-sample (bundled, default), mnist, fashion-mnist, cifar10, or a "
                        "folder of MNIST-format files / CIFAR-10 binary batches / "
                        "train/<class>/ images")
    # None = the default (per model), or with --resume the checkpoint's value (a different
    # one is refused; for --epochs, the interrupted run's planned length)
    p.add_argument("--epochs", type=positive_int("--epochs"), default=None,
                   help=f"passes over the data (default {DEFAULTS['epochs']}; dcgan 11, vae 6; fcn "
                        "and dilated 8; dilated-context 8 for its front-end, then 4; with "
                        "--resume, the run's planned length)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=None,
                   help=f"examples per step (default {DEFAULTS['batch_size']}; dcgan 12)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate "
                   f"(cosine decay to 0; default {DEFAULTS['lr']})")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default=None,
                   help=f"default {DEFAULTS['optimizer']}")
    p.add_argument("--seed", type=int, default=None, help=f"default {DEFAULTS['seed']}")
    p.add_argument("--out", default=None, help="checkpoint path (default: a new "
                   "<model>-<data>-<time>.safetensors; an existing file is refused)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace a file")
    p.add_argument("--resume", default=None, help="continue training from this checkpoint with "
                   "its learning rate, optimizer, batch size and seed")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (the per-epoch lines are still printed)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI ranks (automatic under mpiexec; needed under "
                        "launchers it cannot detect). --batch-size is then the global batch")
    p.add_argument("--sync-bn", action="store_true",
                   help="with several ranks, batch-norm statistics over the global batch")
    p.add_argument("--accumulate", type=positive_int("--accumulate"), default=1, metavar="K",
                   help="split each step's batch into K micro-batches (gradient accumulation: "
                        "the same step in 1/K of the activation memory; with several ranks "
                        "the gradients are sent once per step)")
    p.add_argument("--no-overlap", action="store_true",
                   help="with several ranks, send the gradients after backward instead of "
                        "while it runs (for comparison)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per process for BLAS and the compiled kernels (default: the "
                        "cores no other process is using, checked every epoch; 1 per rank "
                        "with --distributed)")
    p.add_argument("--samples", default=None, metavar="DIR",
                   help="dcgan/vae: write a PNG grid of 64 samples (fixed noise) per epoch here")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="check every layer's outputs and gradients and stop at the first "
                        "NaN/inf, naming the layer and the pass (slower; vn.detect_anomaly)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="dcgan/vae: train on the first N images only (quick looks)")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="segmenters on one images/ + masks/ folder: hold out this share")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="segmenters: start from this checkpoint's weights where names and "
                        "shapes match (a trained dilated front-end for dilated-context)")
    return p


def _run_segmentation(args) -> int:
    from volnet.train.segmentation import iou_table, train_segmenter

    if args.optimizer not in (None, "adam"):
        raise ConfigError(f"volnet train {args.model} uses Adam; drop --optimizer")
    data = "scenes" if args.data == "mnist-sample" else args.data
    result = train_segmenter(args.model, data, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, seed=args.seed, out=args.out,
                             resume=args.resume, overwrite=args.overwrite,
                             progress=not args.quiet, val_fraction=args.val_fraction,
                             init=args.init)
    print(f"held-out mean IoU {result.mean_iou:.4f}, pixel accuracy "
          f"{result.pixel_accuracy:.4f} after {len(result.history.get('loss', []))} epochs this "
          f"run ({result.seconds:.1f} s)")
    print("per-class IoU:\n" + iou_table(result.class_names, result.class_iou))
    print(f"checkpoint saved to {result.path}; label an image with: volnet segment "
          f"{result.path} IMAGE --out overlay.png")
    return 0 if result.finished else 130   # like a shell: interrupted is not success


def _check_options(args) -> None:
    """Refuse, before any output is created, options the model kind would ignore."""
    from volnet.train.segmentation import SEGMENTERS

    generative = args.model in ("dcgan", "vae")
    segmenter = args.model.replace("_", "-") in SEGMENTERS
    if generative or segmenter:
        _refuse_classifier_only_options(args)
    if generative and (args.val_fraction is not None or args.init is not None):
        raise ConfigError("--val-fraction and --init are for the segmenters (fcn, dilated, "
                          "dilated-context)")
    if not generative and (args.limit is not None or args.samples is not None):
        raise ConfigError("--limit and --samples are for dcgan and vae; drop them")


def _refuse_classifier_only_options(args) -> None:
    """The GAN, VAE and segmenter commands train in one process without accumulation: an
    option (or MPI launch) they would ignore is refused rather than silently dropped (under
    mpiexec every rank trained alone and wrote the same checkpoint)."""
    from volnet.train.communicator import launched_size

    ranks = launched_size()
    if args.distributed or args.sync_bn or ranks > 1:
        raise ConfigError(f"volnet train {args.model} trains in one process"
                          + (f" (this is one of {ranks} MPI ranks)" if ranks > 1 else "")
                          + "; run it without mpiexec/srun, --distributed and --sync-bn")
    if args.accumulate != 1 or args.no_overlap:
        raise ConfigError(f"volnet train {args.model} trains in one process without gradient "
                          "accumulation; drop --accumulate and --no-overlap")


def _run_generative(args) -> int:
    from volnet.train.generative import DEFAULTS as RECIPES
    from volnet.train.generative import train_generative

    for key in ("epochs", "batch_size"):
        if getattr(args, key) is None and not args.resume:   # resumed: the run's own
            setattr(args, key, RECIPES[args.model][key])
    if args.lr is not None or args.optimizer is not None:
        raise ConfigError(f"volnet train {args.model} uses its own recipe (Adam, beta1 0.5 for "
                          "the GAN); drop --lr and --optimizer")
    if args.accumulate != 1 or args.no_overlap:
        raise ConfigError(f"volnet train {args.model} trains in one process without gradient "
                          "accumulation; drop --accumulate and --no-overlap")
    if args.seed is None and not args.resume:
        args.seed = DEFAULTS["seed"]

    result = train_generative(args.model, args.data, epochs=args.epochs, batch_size=args.batch_size,
                              seed=args.seed, out=args.out, resume=args.resume,
                              overwrite=args.overwrite, samples=args.samples,
                              progress=not args.quiet, limit=args.limit)
    print(f"trained {args.model} for {result['epochs']} epochs ({result['seconds']:.1f} s this run)")
    print(f"checkpoint saved to {result['path']}; draw digits with: volnet generate "
          f"{result['path']} --n 64 --out grid.png")
    return 130 if result["interrupted"] else 0   # like a shell: interrupted is not success


def run(args) -> int:
    from volnet.commands.outputs import OutputPlan

    _check_options(args)
    # before any data is read or epoch spent; --resume continues (and replaces) its own file
    resuming = bool(args.out and args.resume) and \
        os.path.abspath(args.out) == os.path.abspath(args.resume)
    plan = OutputPlan(args.overwrite)
    plan.add("--out", args.out, replaceable=resuming)
    # the per-epoch grids of a new run must not replace an earlier run's
    plan.folder("--samples", args.samples, pattern=None if args.resume else "epoch-*.png")
    if args.detect_anomaly:
        from volnet.layers.anomaly import detect_anomaly

        with detect_anomaly():
            return _run(args)
    return _run(args)


def _run(args) -> int:
    from volnet.train.segmentation import SEGMENTERS

    if args.model in ("dcgan", "vae"):
        return _run_generative(args)
    if args.model.replace("_", "-") in SEGMENTERS:
        return _run_segmentation(args)
    if args.val_fraction is not None or args.init is not None:
        raise ConfigError("--val-fraction and --init are for the segmenters (fcn, dilated, "
                          "dilated-context)")
    from volnet.runtime.openblas import blas_threads, set_blas_threads
    from volnet.runtime.thread_policy import pin_threads
    from volnet.train.communicator import abort_on_error, get_communicator
    from volnet.train.recipe import train

    # None: Trainer.fit counts the idle cores each epoch (volnet.runtime.thread_policy); MPI ranks
    # sharing a machine would each count the same idle cores, so they keep one thread each
    threads = args.threads if args.threads is not None else (1 if args.distributed else None)
    previous = blas_threads() if threads is not None else None
    try:
        if threads is not None:
            set_blas_threads(threads)
            pin_threads(threads)       # Trainer.fit keeps this count instead of choosing its own
        comm = get_communicator(True if args.distributed else None)
        with abort_on_error(comm):   # a failing rank stops every rank instead of hanging them
            result = train(args.model, args.data, epochs=args.epochs,
                           batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                           seed=args.seed, out=args.out, resume=args.resume,
                           overwrite=args.overwrite, progress=not args.quiet, comm=comm,
                           sync_bn=args.sync_bn, accumulate=args.accumulate,
                           overlap=not args.no_overlap)
    finally:
        if previous is not None:   # main() may run inside a longer-lived process
            set_blas_threads(previous)
        pin_threads(None)
    if not comm.is_main:
        return 0
    where = (f"stopped at epoch {result.epoch:.2f} of {result.planned}" if result.interrupted
             else f"{result.planned} epochs in all")
    print(f"held-out accuracy {result.accuracy:.4f} after {result.epochs_run:.4g} epochs this "
          f"run ({where}; {result.seconds:.1f} s)")
    print(f"checkpoint saved to {result.path}")
    return 130 if result.interrupted else 0   # like a shell: interrupted is not success
