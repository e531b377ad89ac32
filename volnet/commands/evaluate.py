"""``volnet evaluate CHECKPOINT``: held-out accuracy and confusion matrix of a saved net."""

from __future__ import annotations

import numpy as np


def add_parser(sub):
    p = sub.add_parser("evaluate", help="accuracy and confusion matrix on held-out data")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by volnet train")
    p.add_argument("--data", default=None, help="dataset name or folder (default: the one the "
                   "checkpoint was trained on); for MNIST-format folders the t10k-* pair is used")
    return p


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j] = examples of class i predicted as j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def format_matrix(counts: np.ndarray, names) -> str:
    width = max(5, *(len(str(n)) for n in names), len(str(counts.max())) + 1)
    head = " " * width + "".join(f"{str(n)[:width]:>{width}}" for n in names)
    rows = [f"{str(n)[:width]:>{width}}" + "".join(f"{c:>{width}}" for c in row)
            for n, row in zip(names, counts)]
    return "\n".join(["rows: true class, columns: predicted", head] + rows)


def run(args) -> int:
    from volnet.data.batches import BatchIterator
    from volnet.data.registry import load_dataset
    from volnet.errors import ConfigError
    from volnet.io.checkpoint import load
    from volnet.train.trainer import evaluate

    net = load(args.checkpoint)
    prep = net.preprocessing
    data = load_dataset(args.data or prep.get("dataset") or "mnist-sample",
                        tuple(prep.get("input_shape", (3, 32, 32))))
    if list(data.input_shape) != list(prep.get("input_shape", data.input_shape)):
        raise ConfigError(f"the checkpoint was trained on images {prep['input_shape']}, "
                          f"--data gives {list(data.input_shape)}")
    x = BatchIterator(data.x_test, data.y_test, mean=prep.get("mean"), std=prep.get("std")
                      ).transform(data.x_test)
    result = evaluate(net, x, data.y_test)
    names = prep.get("class_names") or [str(i) for i in range(int(data.y_test.max()) + 1)]
    print(f"{args.checkpoint} on {data.name} held-out split: accuracy {result['accuracy']:.4f} "
          f"({round(result['accuracy'] * len(x))}/{len(x)}), loss {result['loss']:.4f}")
    print(format_matrix(confusion_matrix(data.y_test, result["predictions"], len(names)), names))
    return 0
