"""``--data NAME_OR_DIR``: resolve a dataset name or a local folder to a :class:`Dataset`.

Names: ``mnist-sample`` (bundled, offline), ``mnist``, ``fashion-mnist`` and
``cifar10`` (downloaded once into the cache). A folder may hold MNIST-format
IDX files (``train-*``/``t10k-*``), CIFAR-10 binary batches, or images in
``train/<class>/`` and ``test/<class>/`` sub-folders.
"""

from __future__ import annotations

import os

import numpy as np

from volnet.data.cifar10 import load_cifar10_folder
from volnet.data.datasets import (
    FASHION_CLASSES,
    MNIST_STATS,
    Dataset,
    load_mnist_folder,
    load_mnist_sample,
)
from volnet.errors import DataError

NAMES = ("mnist-sample", "mnist", "fashion-mnist", "cifar10")
FASHION_STATS = ((0.2860,), (0.3530,))


def _is_mnist_dir(folder: str) -> bool:
    return any(f.startswith("train-images") for f in os.listdir(folder))


def _is_cifar_dir(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, sub, "test_batch.bin"))
               for sub in ("", "cifar-10-batches-bin"))


def _image_folder_dataset(folder: str, input_shape, lazy: bool = False, comm=None) -> Dataset:
    from volnet.data.images import read_image_folder

    test_name = "test" if os.path.isdir(os.path.join(folder, "test")) else "val"
    if lazy:
        return _lazy_image_folder_dataset(folder, test_name, input_shape, comm)
    x_train, y_train, classes = read_image_folder(os.path.join(folder, "train"), input_shape)
    x_test, y_test, test_classes = read_image_folder(os.path.join(folder, test_name), input_shape)
    if test_classes != classes:
        raise DataError(f"{folder}: train classes {classes} differ from {test_name} classes "
                        f"{test_classes}")
    scaled = x_train.astype(np.float64) / 255
    mean = tuple(scaled.mean(axis=(0, 2, 3)).round(4).tolist())
    std = tuple(np.maximum(scaled.std(axis=(0, 2, 3)), 1e-3).round(4).tolist())
    return Dataset(x_train, y_train, x_test, y_test, classes, mean, std, folder)


def _lazy_image_folder_dataset(folder: str, test_name: str, input_shape, comm) -> Dataset:
    from volnet.data.image_files import ImageFiles
    from volnet.data.images import list_image_files

    splits = {}
    for split in ("train", test_name):
        classes, files = list_image_files(os.path.join(folder, split))
        if not files:
            raise DataError(f"{os.path.join(folder, split)}: no image files in the class folders")
        splits[split] = (classes, ImageFiles([p for p, _ in files], input_shape),
                         np.array([label for _, label in files], dtype=np.int64))
    (classes, x_train, y_train), (test_classes, x_test, y_test) = splits.values()
    if test_classes != classes:
        raise DataError(f"{folder}: train classes {classes} differ from {test_name} classes "
                        f"{test_classes}")
    mean, std = x_train.channel_stats(comm)
    return Dataset(x_train, y_train, x_test, y_test, classes, mean, std, folder)


def load_dataset(name_or_dir: str, input_shape=(3, 32, 32), *, lazy: bool = False,
                 comm=None) -> Dataset:
    """A dataset by name or from a local folder.

    Args:
        name_or_dir: one of NAMES, or a folder (see the module docstring).
        input_shape: (C, H, W) images of an image folder are converted to.
        lazy: an image folder's images become :class:`~volnet.data.image_files.ImageFiles`,
            decoded when indexed, so each data-parallel rank reads only the files of
            its shard (IDX and CIFAR files are a few large files: read whole).
        comm: with ``lazy``, a communicator: the channel statistics are computed by
            the ranks together, each reading 1/W of the training files.

    Example:
        >>> load_dataset("mnist-sample").input_shape
        (1, 28, 28)
    """
    if name_or_dir == "mnist-sample":
        return load_mnist_sample()
    if os.path.isdir(name_or_dir):
        folder = name_or_dir
        if _is_mnist_dir(folder):
            return load_mnist_folder(folder)
        if _is_cifar_dir(folder):
            return load_cifar10_folder(folder)
        if os.path.isdir(os.path.join(folder, "train")):
            return _image_folder_dataset(folder, input_shape, lazy, comm)
        raise DataError(f"{folder}: found neither MNIST-format files (train-images-idx3-ubyte...), "
                        "CIFAR-10 binary batches, nor train/<class>/ image folders")
    if name_or_dir in NAMES:
        from volnet.data.download import fetch

        folder = fetch(name_or_dir)
        if name_or_dir == "cifar10":
            return load_cifar10_folder(folder)
        if name_or_dir == "fashion-mnist":
            return load_mnist_folder(folder, FASHION_CLASSES, FASHION_STATS, "fashion-mnist")
        return load_mnist_folder(folder, stats=MNIST_STATS, name="mnist")
    raise DataError(f"unknown dataset {name_or_dir!r}: not a folder and not one of "
                    f"{', '.join(NAMES)}")
