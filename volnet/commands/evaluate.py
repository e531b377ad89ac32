"""``volnet evaluate CHECKPOINT``: held-out accuracy and confusion matrix of a saved net."""

from __future__ import annotations

import os

import numpy as np


def add_parser(sub):
    p = sub.add_parser("evaluate", help="accuracy and confusion matrix on held-out data")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by volnet train")
    p.add_argument("--data", default=None, help="dataset name or folder (default: the one the "
                   "checkpoint was trained on); for MNIST-format folders the t10k-* pair is used; "
                   "for segmentation checkpoints 'scenes' or an images/ + masks/ folder (its "
                   "test/ split, its --val-fraction share, or all of it)")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="segmentation, one images/ + masks/ folder: evaluate the share held "
                        "out when training with this --val-fraction")
    return p


def _segmentation_data(args, prep: dict):
    """(images, masks, description) to evaluate a segmenter on."""
    from volnet.data.segmentation_folder import read_segmentation_folder, read_split
    from volnet.errors import ConfigError
    from volnet.train.segmentation import load_segmentation_data

    source = args.data or prep.get("dataset") or "scenes"
    if source != "scenes" and not os.path.isdir(source):
        raise ConfigError(f"{source}: not here; pass --data FOLDER (images/ + masks/) or "
                          "--data scenes")
    if source == "scenes" or os.path.isdir(os.path.join(source, "train")) or args.val_fraction:
        if source != "scenes" and args.val_fraction:
            data = read_segmentation_folder(source, args.val_fraction)
        else:
            data = load_segmentation_data(source)
        return data.x_test, data.y_test, f"{data.name} held-out split"
    x, y, _ = read_split(source)
    return x, y, f"{source} (all {len(x)} images)"


def _run_segmentation(args, net, prep: dict) -> int:
    from volnet.errors import DataError
    from volnet.train.segmentation import check_fits, iou_table
    from volnet.train.segmentation_metrics import evaluate_segmentation

    x, y, what = _segmentation_data(args, prep)
    names = list(prep.get("class_names") or [])
    k = len(names)
    channels = prep["input_shape"][0]
    if x.shape[1] != channels:
        raise DataError(f"{what}: images have {x.shape[1]} channel(s), {args.checkpoint} was "
                        f"trained on {channels}")
    labels = y[y != prep.get("ignore_index", 255)]
    if labels.size and int(labels.max()) >= k:
        raise DataError(f"{what}: masks use class {int(labels.max())} but {args.checkpoint} "
                        f"knows {k} classes ({', '.join(names[:4])}...)")
    check_fits(net, (channels,) + x.shape[2:], k)
    mean = np.asarray(prep.get("mean", [0.0]), dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(prep.get("std", [1.0]), dtype=np.float32).reshape(1, -1, 1, 1)
    result = evaluate_segmentation(net, (x.astype(np.float32) / 255 - mean) / std, y, k,
                                   prep.get("ignore_index", 255))
    print(f"{args.checkpoint} on {what}: mean IoU {result['mean_iou']:.4f}, pixel accuracy "
          f"{result['pixel_accuracy']:.4f} ({len(x)} images, loss {result['loss']:.4f})")
    print("per-class IoU:\n" + iou_table(names, result["class_iou"]))
    return 0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = examples of class i predicted as j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def format_matrix(counts: np.ndarray, names) -> str:
    """The confusion matrix as text; columns are separated by at least one space."""
    width = max(5, *(len(str(n)) for n in names), len(str(counts.max())) + 1) + 1
    head = " " * width + "".join(f"{n!s:>{width}}" for n in names)
    rows = [f"{n!s:>{width}}" + "".join(f"{c:>{width}}" for c in row)
            for n, row in zip(names, counts)]
    return "\n".join(["rows: true class, columns: predicted", head] + rows)


def _dataset_source(args, prep: dict) -> str:
    """--data, else the dataset the checkpoint names; a training folder that is not here
    gets an error suggesting --data instead of "unknown dataset"."""
    from volnet.data.registry import NAMES
    from volnet.errors import ConfigError

    if args.data:
        return args.data
    name = prep.get("dataset") or "mnist-sample"
    if name not in NAMES and not os.path.isdir(name):
        raise ConfigError(f"{args.checkpoint} was trained on the folder {name!r}, which is not "
                          f"here; pass --data FOLDER (with train/<class>/ and test/<class>/ "
                          "images of the same classes)")
    return name


def run(args) -> int:
    from volnet.commands.checks import check_classes, check_shape, num_outputs, recorded_shape
    from volnet.commands.preprocessing import for_checkpoint
    from volnet.data.batches import BatchIterator
    from volnet.data.registry import load_dataset
    from volnet.io.checkpoint import load
    from volnet.train.evaluation import evaluate

    net = load(args.checkpoint)
    prep = net.preprocessing
    if prep.get("task") == "segmentation":
        return _run_segmentation(args, net, prep)
    if args.val_fraction is not None:
        from volnet.errors import ConfigError

        raise ConfigError("--val-fraction is for segmentation checkpoints")
    shape = recorded_shape(args.checkpoint, prep)
    source = _dataset_source(args, prep)
    data = load_dataset(source, shape)
    where = f"--data {source}" if args.data else f"its dataset {source}"
    check_shape(args.checkpoint, shape, data.input_shape, where)
    norm = for_checkpoint(prep, shape[0], args.checkpoint, "evaluate")
    names = check_classes(args.checkpoint, prep, num_outputs(net, shape, args.checkpoint),
                          data.class_names, where, data=source)
    x = BatchIterator(data.x_test, data.y_test, mean=norm.mean, std=norm.std
                      ).transform(data.x_test)
    result = evaluate(net, x, data.y_test)
    print(f"{args.checkpoint} on {data.name} held-out split: accuracy {result['accuracy']:.4f} "
          f"({round(result['accuracy'] * len(x))}/{len(x)}), loss {result['loss']:.4f}")
    print(format_matrix(confusion_matrix(data.y_test, result["predictions"], len(names)), names))
    return 0
