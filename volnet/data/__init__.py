"""Datasets and batches: MNIST-format IDX files, CIFAR-10 binary, image folders, downloads.

Nothing here unpickles: IDX, CIFAR-10 *binary* batches and image files only.
"""

from volnet.data.batches import BatchIterator
from volnet.data.datasets import Dataset, load_mnist_folder, load_mnist_sample, sample_dir
from volnet.data.idx import read_idx, write_idx
from volnet.data.registry import load_dataset

__all__ = [
           "BatchIterator",
           "Dataset",
           "load_dataset",
           "load_mnist_folder",
           "load_mnist_sample",
           "read_idx",
           "sample_dir",
           "write_idx",
]
