"""CIFAR-10 in its *binary* version (never the pickled Python batches).

Each record is 3,073 bytes: one label byte, then 1,024 red, 1,024 green and
1,024 blue bytes of a 32x32 image in row-major order (Krizhevsky's layout).
A batch file must hold a whole number of records; the five training batches
and the test batch hold 10,000 each (30,730,000 bytes).
"""

from __future__ import annotations

import os

import numpy as np

from volnet.data.datasets import CIFAR10_CLASSES, CIFAR10_STATS, Dataset
from volnet.errors import DataError

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary batch file.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "b.bin")
        >>> _ = open(path, "wb").write(bytes([7]) + bytes(3072))
        >>> x, y = read_cifar_batch(path)
        >>> x.shape, y.tolist()
        ((1, 3, 32, 32), [7])
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    size = os.path.getsize(path)
    if size == 0 or size % RECORD:
        raise DataError(f"{path}: {size} bytes is not a whole number of {RECORD}-byte CIFAR-10 "
                        "records (label + 3x32x32); the file is truncated or not CIFAR-10 binary")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD)
    labels = raw[:, 0].astype(np.int64)
    if labels.max() >= 10:
        raise DataError(f"{path}: label {int(labels.max())} out of range [0, 10)")
    return raw[:, 1:].reshape(-1, 3, 32, 32), labels


def _batches_dir(folder: str) -> str:
    for candidate in (folder, os.path.join(folder, "cifar-10-batches-bin")):
        if os.path.isfile(os.path.join(candidate, TEST_FILE)):
            return candidate
    raise DataError(f"{folder}: no CIFAR-10 binary batches (expected {TEST_FILE} and "
                    "data_batch_1.bin ... data_batch_5.bin, or a cifar-10-batches-bin folder)")


def load_cifar10_folder(folder: str) -> Dataset:
    """The CIFAR-10 training batches present in ``folder`` and the test batch."""
    folder = _batches_dir(folder)
    parts = [read_cifar_batch(os.path.join(folder, f)) for f in TRAIN_FILES
             if os.path.isfile(os.path.join(folder, f))]
    if not parts:
        raise DataError(f"{folder}: no data_batch_*.bin training files")
    x_test, y_test = read_cifar_batch(os.path.join(folder, TEST_FILE))
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   x_test, y_test, list(CIFAR10_CLASSES), CIFAR10_STATS[0], CIFAR10_STATS[1],
                   "cifar10")
