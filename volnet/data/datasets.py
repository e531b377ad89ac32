"""Datasets as plain arrays: MNIST-format folders, the bundled sample, CIFAR-10, names.

A :class:`Dataset` holds uint8 images (N, C, H, W) and int64 labels for a
training and a held-out split, the class names, and the per-channel mean and
std (on the 0-1 scale) that the training pipeline normalises with. Loaders
never unpickle anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from volnet.data.idx import read_idx
from volnet.errors import DataError

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
# Statistics on the 0-1 scale; MNIST's are the usual (0.1307, 0.3081).
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass
class Dataset:
    """Training and held-out arrays plus what preprocessing needs.

    Attributes:
        x_train, x_test: uint8 images (N, C, H, W).
        y_train, y_test: int64 labels (N,).
        class_names: one name per class index.
        mean, std: per-channel statistics on the 0-1 scale.
        name: a short description for messages.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list = field(default_factory=list)
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    name: str = ""

    def __post_init__(self) -> None:
        train, test = np.shape(self.x_train)[1:], np.shape(self.x_test)[1:]
        if len(np.shape(self.x_train)) == 4 == len(np.shape(self.x_test)) and train != test:
            raise DataError(f"{self.name or 'dataset'}: training images are "
                            f"{'x'.join(map(str, train))} (CxHxW) but held-out images are "
                            f"{'x'.join(map(str, test))}; both splits must have one shape")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-example image shape (C, H, W)."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"{folder}: missing {stem}[.gz]; a folder of MNIST-format data holds "
                    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
                    "and t10k-labels-idx1-ubyte (gzipped or not)")


def read_mnist_split(folder: str, split: str, num_classes: int = 10):
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of split "train" or "t10k"."""
    images_path = _find(folder, f"{split}-images-idx3-ubyte")
    labels_path = _find(folder, f"{split}-labels-idx1-ubyte")
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise DataError(f"{folder}: MNIST files must hold unsigned bytes (IDX type 0x08)")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {len(images)} images in {os.path.basename(images_path)} but "
                        f"{len(labels)} labels in {os.path.basename(labels_path)}")
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range "
                        f"[0, {num_classes})")
    return images[:, None], labels.astype(np.int64)


def load_mnist_folder(folder: str, class_names=None, stats=MNIST_STATS, name=None) -> Dataset:
    """Both splits of an MNIST-format folder (MNIST, Fashion-MNIST, the bundled sample)."""
    class_names = list(class_names or MNIST_CLASSES)
    x_train, y_train = read_mnist_split(folder, "train", len(class_names))
    x_test, y_test = read_mnist_split(folder, "t10k", len(class_names))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"{folder}: {os.path.basename(_find(folder, 'train-images-idx3-ubyte'))} "
                        f"holds {x_train.shape[2]}x{x_train.shape[3]} images but "
                        f"{os.path.basename(_find(folder, 't10k-images-idx3-ubyte'))} holds "
                        f"{x_test.shape[2]}x{x_test.shape[3]}; training and held-out images must "
                        "have one size")
    return Dataset(x_train, y_train, x_test, y_test, class_names, stats[0], stats[1],
                   name or folder)


def sample_dir() -> str:
    """Folder of the bundled MNIST sample (7,000 training + 1,000 held-out digits)."""
    return str(resources.files("volnet.data") / "mnist_sample")


def load_mnist_sample() -> Dataset:
    """The bundled sample of 8,000 real MNIST digits (see its README for attribution).

    Example:
        >>> data = load_mnist_sample()
        >>> data.x_train.shape, data.x_test.shape
        ((7000, 1, 28, 28), (1000, 1, 28, 28))
    """
    return load_mnist_folder(sample_dir(), name="mnist-sample")
