"""IDX (MNIST) reader: round trips, every kind of corrupt file, bounded gzip, the bundled sample."""

import gzip
import hashlib
import os
import struct
import tracemalloc

import numpy as np
import pytest

from volnet.data import load_mnist_folder, load_mnist_sample, read_idx, sample_dir, write_idx
from volnet.errors import DataError


def write_raw(path, data: bytes, compress=False):
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(data)
    return str(path)


def header(type_code, dims):
    return bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_images_and_labels(tmp_path, rng, compress):
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    write_idx(tmp_path / "i", images, compress)
    write_idx(tmp_path / "l", labels, compress)
    got = read_idx(tmp_path / "i", ndim=3)
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    assert np.array_equal(read_idx(tmp_path / "l", ndim=1), labels)


def test_reads_big_endian_wider_types(tmp_path):
    values = np.array([[1, -2], [300, 4]], dtype=">i4")
    path = write_raw(tmp_path / "x", header(0x0C, (2, 2)) + values.tobytes())
    got = read_idx(path, ndim=2)
    assert got.tolist() == [[1, -2], [300, 4]] and got.dtype == np.int32


@pytest.mark.parametrize("data, message", [
    (b"", "truncated header"),
    (b"\x00\x00", "truncated header"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "must start with two zero bytes"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX type code 0x07"),
    (header(0x08, (2,)) + b"\x00\x01", "expected 3-D image file, header declares 1-D"),
    (bytes([0, 0, 0x08, 3]) + struct.pack(">2I", 2, 28), "truncated header"),
])
def test_rejects_bad_headers(tmp_path, data, message):
    path = write_raw(tmp_path / "bad", data)
    with pytest.raises(DataError, match=message):
        read_idx(path, ndim=3)


def test_rejects_truncated_payload_with_counts(tmp_path):
    path = write_raw(tmp_path / "t", header(0x08, (3, 2, 2)) + bytes(10))
    with pytest.raises(DataError, match="12 bytes, the file holds 10"):
        read_idx(path, ndim=3)


@pytest.mark.parametrize("compress", [False, True])
def test_rejects_trailing_bytes(tmp_path, compress):
    path = write_raw(tmp_path / "t", header(0x08, (2,)) + bytes(3), compress)
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path, ndim=1)


def test_truncated_gzip_payload(tmp_path):
    path = write_raw(tmp_path / "t.gz", header(0x08, (3, 2, 2)) + bytes(10), compress=True)
    with pytest.raises(DataError, match="expected 12 bytes, found 10"):
        read_idx(path, ndim=3)


def test_cut_gzip_stream_is_a_data_error(tmp_path):
    blob = gzip.compress(header(0x08, (100,)) + os.urandom(100))
    path = write_raw(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(DataError):
        read_idx(path, ndim=1)


def test_huge_declared_dims_raise_before_allocating(tmp_path):
    path = write_raw(tmp_path / "huge", header(0x08, (2 ** 31, 28, 28)) + bytes(7000))
    tracemalloc.start()
    with pytest.raises(DataError, match="corrupt"):
        read_idx(path, ndim=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_gzip_bomb_is_read_only_to_the_declared_size(tmp_path):
    # header says 10 images of 28x28, the stream inflates to 100 MiB of zeros
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header(0x08, (10, 28, 28)))
        chunk = bytes(1 << 20)
        for _ in range(100):
            f.write(chunk)
    assert os.path.getsize(path) < 200_000
    tracemalloc.start()
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path, ndim=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20


def _mnist_dir(folder, n_train=6, n_test=4, n_labels=None, label_max=9, rng=None):
    rng = rng or np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{split}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress=True)
        labels = rng.integers(0, label_max + 1, n_labels or n, dtype=np.uint8)
        labels[0] = label_max
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels, compress=True)
    return folder


def test_mnist_folder_shapes(tmp_path):
    data = load_mnist_folder(str(_mnist_dir(tmp_path)))
    assert data.x_train.shape == (6, 1, 28, 28) and data.y_test.shape == (4,)
    assert data.y_train.dtype == np.int64 and data.input_shape == (1, 28, 28)


def test_image_label_count_mismatch(tmp_path):
    with pytest.raises(DataError, match="6 images .* but 5 labels"):
        load_mnist_folder(str(_mnist_dir(tmp_path, n_labels=5)))


def test_labels_out_of_range(tmp_path):
    with pytest.raises(DataError, match="label 12 out of range"):
        load_mnist_folder(str(_mnist_dir(tmp_path, label_max=12)))


def test_missing_file_names_the_expected_names(tmp_path):
    _mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist_folder(str(tmp_path))


def test_bundled_sample_is_the_published_one():
    with open(os.path.join(sample_dir(), "README.md")) as f:
        readme = f.read()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    for line in readme.splitlines():
        if line.startswith("- ") and "-ubyte.gz" in line:
            name, digest = line[2:].split()
            with open(os.path.join(sample_dir(), name), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == digest
    data = load_mnist_sample()
    assert data.x_train.shape == (7000, 1, 28, 28) and data.x_test.shape == (1000, 1, 28, 28)
    assert set(np.unique(data.y_test)) == set(range(10)) and data.x_train.max() == 255
