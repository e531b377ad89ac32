"""The images/ + masks/ folder format: round trip, the two split forms, and every
data-fit check with its message."""

import numpy as np
import pytest
from PIL import Image

from volnet.data.scenes import make_scenes
from volnet.data.segmentation_folder import (
    is_segmentation_folder,
    read_segmentation_folder,
    write_segmentation_folder,
)
from volnet.errors import DataError


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(12, "train", seed=5), make_scenes(4, "test", seed=5)


@pytest.fixture
def split_folder(tmp_path, scenes):
    (xa, ya), (xb, yb) = scenes
    write_segmentation_folder(tmp_path / "train", xa, ya)
    write_segmentation_folder(tmp_path / "test", xb, yb)
    return tmp_path


def test_train_and_test_folders_read_back_exactly(split_folder, scenes):
    (xa, ya), (xb, yb) = scenes
    data = read_segmentation_folder(split_folder)
    assert is_segmentation_folder(split_folder)
    np.testing.assert_array_equal(data.x_train, xa)
    np.testing.assert_array_equal(data.y_train, ya)
    np.testing.assert_array_equal(data.x_test, xb)
    np.testing.assert_array_equal(data.y_test, yb)
    assert data.num_classes == int(ya[ya != 255].max()) + 1
    assert data.mean[0] == pytest.approx((xa / 255.0).mean())


def test_one_folder_is_split_by_val_fraction_disjointly(tmp_path, scenes):
    (xa, ya), _ = scenes
    write_segmentation_folder(tmp_path, xa, ya)
    data = read_segmentation_folder(tmp_path, val_fraction=0.25, seed=1)
    assert len(data.x_test) == 3 and len(data.x_train) == 9
    rows = {a.tobytes() for a in xa}
    got = [a.tobytes() for a in np.concatenate([data.x_train, data.x_test])]
    assert set(got) == rows and len(got) == len(rows)
    with pytest.raises(DataError, match="--val-fraction"):
        read_segmentation_folder(tmp_path)


def test_class_names_come_from_classes_txt(split_folder):
    names = ["background"] + [f"digit {d}" for d in range(10)]
    (split_folder / "classes.txt").write_text("\n".join(names) + "\n")
    assert read_segmentation_folder(split_folder).class_names == names
    (split_folder / "classes.txt").write_text("background\n")
    with pytest.raises(DataError, match="names 1 classes"):
        read_segmentation_folder(split_folder)


def _break(folder, how):
    train = folder / "train"
    if how == "missing mask":
        (train / "masks" / "00003.png").unlink()
    elif how == "missing image":
        (train / "images" / "00003.png").unlink()
    elif how == "colour mask":
        Image.new("RGB", (64, 64)).save(train / "masks" / "00002.png")
    elif how == "mask size":
        Image.new("L", (32, 64)).save(train / "masks" / "00002.png")
    elif how == "image sizes":
        Image.new("L", (48, 48)).save(train / "images" / "00001.png")
        Image.new("L", (48, 48)).save(train / "masks" / "00001.png")
    elif how == "unseen class":
        Image.fromarray(np.full((64, 64), 40, np.uint8)).save(folder / "test" / "masks" / "00000.png")
    elif how == "all ignored":
        for path in (train / "masks").iterdir():
            Image.fromarray(np.full((64, 64), 255, np.uint8)).save(path)


@pytest.mark.parametrize("how, words", [
    ("missing mask", "have no counterpart"), ("missing image", "masks have no counterpart"),
    ("colour mask", "one class index per pixel"), ("mask size", "labels its image's pixels"),
    ("image sizes", "images differ in size"), ("unseen class", "classes [40]"),
    ("all ignored", "nothing to learn")])
def test_data_that_does_not_fit_is_refused_with_the_fix(split_folder, how, words):
    _break(split_folder, how)
    with pytest.raises(DataError, match=words.replace("[", r"\[").replace("]", r"\]")):
        read_segmentation_folder(split_folder)


def test_not_a_folder_and_bad_fraction(tmp_path, scenes):
    with pytest.raises(DataError, match="not a folder"):
        read_segmentation_folder(tmp_path / "nope")
    (xa, ya), _ = scenes
    write_segmentation_folder(tmp_path, xa, ya)
    with pytest.raises(DataError, match="between 0 and 1"):
        read_segmentation_folder(tmp_path, val_fraction=1.5)
