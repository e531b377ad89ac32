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
from volnet.limits import check_budget, is_regular_file, open_regular

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path: str, max_bytes: int | str | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from one binary batch file.

    The file must be a regular file within the memory budget ``max_bytes``
    (default ``$VOLNET_MAX_BYTES`` or 2 GiB; see :mod:`volnet.limits`).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "b.bin")
        >>> _ = open(path, "wb").write(bytes([7]) + bytes(3072))
        >>> x, y = read_cifar_batch(path)
        >>> x.shape, y.tolist()
        ((1, 3, 32, 32), [7])
    """
    with open_regular(path, DataError) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0 or size % RECORD:
            raise DataError(f"{path}: {size} bytes is not a whole number of {RECORD}-byte "
                            "CIFAR-10 records (label + 3x32x32); the file is truncated or not "
                            "CIFAR-10 binary")
        check_budget(size + 8 * (size // RECORD), f"{path}: {size // RECORD:,} CIFAR-10 records",
                     max_bytes, DataError)
        raw = np.empty((size // RECORD, RECORD), dtype=np.uint8)
        if f.readinto(memoryview(raw.reshape(-1))) != size:
            raise DataError(f"{path}: the file shrank while it was read")
    labels = raw[:, 0].astype(np.int64)
    if labels.max() >= 10:
        raise DataError(f"{path}: label {int(labels.max())} out of range [0, 10)")
    return raw[:, 1:].reshape(-1, 3, 32, 32), labels


def _batches_dir(folder: str) -> str:
    for candidate in (folder, os.path.join(folder, "cifar-10-batches-bin")):
        if is_regular_file(os.path.join(candidate, TEST_FILE)):
            return candidate
    raise DataError(f"{folder}: no CIFAR-10 binary batches (expected {TEST_FILE} and "
                    "data_batch_1.bin ... data_batch_5.bin, or a cifar-10-batches-bin folder)")


def load_cifar10_folder(folder: str, max_bytes: int | str | None = None) -> Dataset:
    """The CIFAR-10 training batches present in ``folder`` and the test batch.

    The total of all batch files (training batches counted twice: they are joined
    into one array) must fit the memory budget ``max_bytes`` before any is read.
    """
    folder = _batches_dir(folder)
    train = [os.path.join(folder, f) for f in TRAIN_FILES
             if is_regular_file(os.path.join(folder, f))]
    if not train:
        raise DataError(f"{folder}: no data_batch_*.bin training files")
    test = os.path.join(folder, TEST_FILE)
    records = [os.path.getsize(p) // RECORD for p in train + [test]]
    check_budget(sum((2 if i < len(train) else 1) * n * (RECORD + 8) for i, n in enumerate(records)),
                 f"{folder}: {sum(records):,} CIFAR-10 records", max_bytes, DataError)
    parts = [read_cifar_batch(p, max_bytes) for p in train]
    x_test, y_test = read_cifar_batch(test, max_bytes)
    return Dataset(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   x_test, y_test, list(CIFAR10_CLASSES), CIFAR10_STATS[0], CIFAR10_STATS[1],
                   "cifar10")
