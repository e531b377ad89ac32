"""CIFAR-10 binary batches, image folders and dataset names."""

import os

import numpy as np
import pytest
from PIL import Image

from volnet.data.cifar10 import RECORD, load_cifar10_folder, read_cifar_batch
from volnet.data.images import load_image, read_image_folder
from volnet.data.registry import load_dataset
from volnet.errors import DataError


def test_full_size_batch_shape(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    raw = np.zeros((10000, RECORD), dtype=np.uint8)
    raw[:, 0] = np.arange(10000) % 10
    raw.tofile(path)
    assert os.path.getsize(path) == 30_730_000
    x, y = read_cifar_batch(str(path))
    assert x.shape == (10000, 3, 32, 32) and x.dtype == np.uint8 and y[:12].tolist() == [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_plane_order_is_red_green_blue_row_major(tmp_path):
    record = np.zeros(RECORD, dtype=np.uint8)
    record[0] = 6
    record[1 + 0 * 1024 + 0] = 11            # red, row 0, col 0
    record[1 + 1 * 1024 + 32 + 2] = 22       # green, row 1, col 2
    record[1 + 2 * 1024 + 3 * 32 + 4] = 33   # blue, row 3, col 4
    record.tofile(tmp_path / "b.bin")
    x, y = read_cifar_batch(str(tmp_path / "b.bin"))
    assert y.tolist() == [6]
    assert (x[0, 0, 0, 0], x[0, 1, 1, 2], x[0, 2, 3, 4]) == (11, 22, 33) and x.sum() == 66


@pytest.mark.parametrize("size", [0, RECORD - 1, 2 * RECORD + 5])
def test_wrong_size_raises(tmp_path, size):
    (tmp_path / "b.bin").write_bytes(bytes(size))
    with pytest.raises(DataError, match="3073-byte"):
        read_cifar_batch(str(tmp_path / "b.bin"))


def test_label_out_of_range(tmp_path):
    (tmp_path / "b.bin").write_bytes(bytes([10]) + bytes(RECORD - 1))
    with pytest.raises(DataError, match="label 10"):
        read_cifar_batch(str(tmp_path / "b.bin"))


def test_folder_with_batches_subfolder(tmp_path):
    sub = tmp_path / "cifar-10-batches-bin"
    sub.mkdir()
    for name, n in (("data_batch_1.bin", 3), ("data_batch_2.bin", 2), ("test_batch.bin", 4)):
        np.zeros((n, RECORD), dtype=np.uint8).tofile(sub / name)
    data = load_dataset(str(tmp_path))
    assert data.x_train.shape == (5, 3, 32, 32) and len(data.y_test) == 4
    assert data.class_names[0] == "airplane"
    with pytest.raises(DataError, match="no CIFAR-10"):
        load_cifar10_folder(str(tmp_path / "cifar-10-batches-bin" / "nothing"))


def _png(path, value, size=(10, 6), mode="RGB"):
    Image.new(mode, size, value).save(path)


def test_load_image_converts_and_resizes(tmp_path):
    _png(tmp_path / "a.png", (200, 100, 50))
    rgb = load_image(str(tmp_path / "a.png"), (3, 4, 5))
    assert rgb.shape == (3, 4, 5) and rgb[:, 0, 0].tolist() == [200, 100, 50]
    grey = load_image(str(tmp_path / "a.png"), (1, 28, 28), invert=True)
    expect = 255 - round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)   # ITU-R 601-2 luma
    assert grey.shape == (1, 28, 28) and abs(int(grey[0, 3, 3]) - expect) <= 1


def test_decompression_bomb_and_garbage_rejected(tmp_path):
    Image.new("L", (5000, 4000)).save(tmp_path / "big.png")       # 20 MP, a few KB on disk
    with pytest.raises(DataError, match="pixel"):
        load_image(str(tmp_path / "big.png"), (1, 28, 28))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read image"):
        load_image(str(tmp_path / "junk.png"), (1, 28, 28))


def test_image_folder_dataset(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, value in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", value)
    data = load_dataset(str(tmp_path), input_shape=(3, 8, 8))
    assert data.class_names == ["cat", "dog"] and data.x_train.shape == (6, 3, 8, 8)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] and data.x_test[3, 2, 0, 0] == 255
    x, _, names = read_image_folder(str(tmp_path / "test"), (1, 8, 8))
    assert x.shape == (4, 1, 8, 8) and names == ["cat", "dog"]


def test_unknown_name_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="mnist-sample"):
        load_dataset("imagenet-22k")
    with pytest.raises(DataError, match="neither"):
        load_dataset(str(tmp_path))


def test_loaders_never_unpickle(monkeypatch, tmp_path):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("a loader called pickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    np.zeros((2, RECORD), dtype=np.uint8).tofile(tmp_path / "data_batch_1.bin")
    np.zeros((2, RECORD), dtype=np.uint8).tofile(tmp_path / "test_batch.bin")
    assert len(load_dataset(str(tmp_path)).x_train) == 2
    assert len(load_dataset("mnist-sample").x_test) == 1000
