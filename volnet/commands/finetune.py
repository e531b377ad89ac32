"""``volnet finetune MODEL --weights W --data DIR``: new head, frozen body, train, save."""

from __future__ import annotations

import os

import numpy as np


def add_parser(sub):
    from volnet.commands.checks import positive_int
    from volnet.commands.summary import parse_shape

    p = sub.add_parser("finetune", help="fine-tune a pretrained zoo model on an image folder",
                       description="Load pretrained weights, replace the classifier for the "
                                   "folder's classes, freeze the rest and train the head "
                                   "(or what --train names). Prints held-out accuracy before "
                                   "and after, and saves a checkpoint for volnet predict.")
    p.add_argument("model", help="zoo model name, e.g. resnet18, or a network file with its "
                   "weights: a volnet checkpoint (volnet train, vn.save or volnet import write "
                   "one) or an .onnx file")
    p.add_argument("--weights", default=None, help="for a zoo model: a .pth/.safetensors file "
                   "with the model's (torchvision) keys, a checkpoint of volnet train, or "
                   "'imagenet' to download torchvision's weights")
    p.add_argument("--data", required=True, help="folder of <class>/<image> sub-folders, or "
                   "with train/ and val/ (or test/, as volnet train takes) sub-folders of "
                   "that form")
    p.add_argument("--input", type=parse_shape, default=None,
                   help="input volume CxHxW the images are resized to (default: the model's)")
    p.add_argument("--train", nargs="+", default=None, metavar="PATTERN",
                   help="parameters to train (glob, e.g. 'layer4.*' 'fc.*'); default: the head")
    p.add_argument("--epochs", type=positive_int("--epochs"), default=5)
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of each class held out when DIR has no val/ folder")
    p.add_argument("--no-imagenet-norm", action="store_true",
                   help="do not normalise with ImageNet's mean and std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="checkpoint path (default <model>-finetuned."
                   "safetensors); an existing file is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def split_held_out(labels: np.ndarray, fraction: float, seed: int):
    """Indices (train, held-out) with ``fraction`` of every class held out (at least one)."""
    from volnet.errors import ConfigError

    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--val-fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        if len(idx) < 2:
            raise ConfigError(f"class {label} has {len(idx)} image(s); need at least 2 to hold "
                              "one out (or give DIR/train and DIR/val)")
        k = max(1, round(fraction * len(idx)))
        held.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(train), np.sort(held)


def _load_data(folder: str, shape, fraction: float, seed: int):
    from volnet.data.images import read_image_folder
    from volnet.errors import DataError

    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    if not os.path.isdir(val_dir):
        val_dir = os.path.join(folder, "test")     # the layout volnet train takes
    if os.path.isdir(train_dir) and os.path.isdir(val_dir):
        x, y, classes = read_image_folder(train_dir, shape)
        xv, yv, val_classes = read_image_folder(val_dir, shape)
        if val_classes != classes:
            raise DataError(f"{folder}: train/ has classes {classes} but "
                            f"{os.path.basename(val_dir)}/ has {val_classes}")
        return x, y, xv, yv, classes
    x, y, classes = read_image_folder(folder, shape)
    train, held = split_held_out(y, fraction, seed)
    return x[train], y[train], x[held], y[held], classes


def _check_net_takes(net, source: str, trained, shape) -> None:
    """``--input`` other than the recorded shape: refused only when the network cannot take it
    (a fully connected layer sized for the old maps) or the channels differ (mean/std)."""
    from volnet.commands.checks import check_shape
    from volnet.errors import ShapeError

    if tuple(shape) == tuple(trained):
        return
    if shape[0] != trained[0]:
        check_shape(source, trained, shape, "--input")
    try:
        net.output_shape(tuple(shape))
    except ShapeError as err:
        raise ShapeError(f"{source} was trained on images of {'x'.join(map(str, trained))} and "
                         f"its network cannot take --input {'x'.join(map(str, shape))}: "
                         f"{err}") from None


def _own_classes(net, shape, recorded, classes) -> bool:
    """Whether the folder holds exactly the classes the file's head was trained on."""
    names = (recorded or {}).get("class_names")
    return (names is not None and [str(n) for n in names] == [str(c) for c in classes]
            and int(np.prod(net.output_shape(tuple(shape)))) == len(classes))


def run(args) -> int:
    from volnet.commands.checks import check_shape
    from volnet.commands.model_arg import resolve_model
    from volnet.commands.outputs import OutputPlan
    from volnet.commands.preprocessing import checkpoint_preprocessing, for_checkpoint
    from volnet.data.batches import BatchIterator
    from volnet.data.imagenet import MEAN, STD
    from volnet.errors import ConfigError
    from volnet.io.checkpoint import save
    from volnet.io.weights import absent_aux_heads, fetch_weights
    from volnet.models.registry import INPUT_SHAPES, build
    from volnet.train.callbacks import LambdaCallback
    from volnet.train.evaluation import evaluate
    from volnet.train.finetune import finetune, load_backbone, replace_head
    from volnet.train.optim import Adam
    from volnet.train.recipe import build_for_data

    from_file = os.path.isfile(args.model)
    stem = os.path.splitext(os.path.basename(args.model))[0] if from_file else args.model
    out = OutputPlan(args.overwrite).add("--out", args.out or f"{stem}-finetuned.safetensors")
    if from_file and args.weights:
        raise ConfigError(f"{args.model} carries its own weights (a checkpoint or .onnx file); "
                          "drop --weights, which is for a zoo model name")
    if not from_file and not args.weights:
        raise ConfigError(f"--weights is required with a zoo model ({args.model}): a weights "
                          "file, a volnet checkpoint or 'imagenet'")
    if from_file:
        model = resolve_model(args.model)
        net, recorded = model.net, dict(model.preprocessing or {})
        shape = args.input or model.input_shape
        if shape is None:
            raise ConfigError(f"{model.description} records no input shape; pass --input CxHxW")
        source = args.model
    else:
        weights = fetch_weights(args.model) if args.weights == "imagenet" else args.weights
        recorded = checkpoint_preprocessing(weights)
        shape = args.input or (recorded and tuple(recorded.get("input_shape") or ())) or \
            INPUT_SHAPES[args.model]
        source = weights
    if recorded and recorded.get("input_shape"):
        if from_file:   # the network is built: any input it can take will do, as for .onnx
            _check_net_takes(net, source, recorded["input_shape"], shape)
        else:
            check_shape(source, recorded["input_shape"], shape, "--input")
    x, y, xv, yv, classes = _load_data(args.data, shape, args.val_fraction, args.seed)
    head = None     # a file fine-tuned on its own classes keeps its trained head
    if not from_file:
        net = build(args.model) if tuple(shape) == INPUT_SHAPES.get(args.model) else \
            build_for_data(args.model, shape, len(classes), args.seed)
        head = replace_head(net, len(classes), rng=args.seed)
        load_backbone(net, weights, head, ignore=absent_aux_heads(net))
    elif not _own_classes(net, shape, recorded, classes):
        head = replace_head(net, len(classes), rng=args.seed)
    kept = None
    if recorded is not None:       # a checkpoint or .onnx file: fed as it records (or said)
        norm = for_checkpoint(recorded, shape[0], source, "finetune")
        mean, std, kept = norm.mean, norm.std, norm.record
    elif args.no_imagenet_norm or shape[0] != 3:
        mean, std = None, None     # ImageNet's statistics are for 3-channel images
    else:
        mean, std = MEAN, STD      # torchvision's weights were trained on them
    val_x = BatchIterator(xv, yv, mean=mean, std=std).transform(xv)   # for the "before" figure
    before = {}   # held-out accuracy at the start (new head, or the file's own)

    def record(trainer):
        before["accuracy"] = evaluate(trainer.net, val_x, yv)["accuracy"]
    history = finetune(net, x, y, train=args.train, epochs=args.epochs,
                       batch_size=args.batch_size, optimizer=Adam(lr=args.lr), seed=args.seed,
                       mean=mean, std=std, val=(xv, yv), progress=not args.quiet,
                       callbacks=[LambdaCallback(on_train_begin=record)])
    trained = [name for name, _, _ in net.named_params(trainable_only=True)]
    print(f"trained {len(trained)} of {len(list(net.named_params()))} parameter arrays "
          f"({', '.join(trained[:4])}{', ...' if len(trained) > 4 else ''}) on {len(x)} images")
    print(f"held-out accuracy ({len(xv)} images): before {before['accuracy']:.3f} "
          f"({'new head' if head else 'its trained head'}), after "
          f"{history['val_accuracy'][-1]:.3f}")
    net.unfreeze()
    save(out, net, preprocessing={"input_shape": list(shape), "class_names": list(classes),
                                  **(kept or {"scale": "x / 255",
                                                "mean": None if mean is None else list(mean),
                                                "std": None if std is None else list(std)})})
    print(f"saved {out}")
    return 0

