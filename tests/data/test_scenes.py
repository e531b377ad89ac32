"""The digit scenes: deterministic, drawn from the right split, labelled as documented."""

import numpy as np
import pytest

from volnet.data.datasets import load_mnist_sample
from volnet.data.scenes import IGNORE, make_scenes, scene_dataset
from volnet.errors import ConfigError


@pytest.fixture(scope="module")
def sample():
    return load_mnist_sample()


def test_same_arguments_give_the_same_scenes_and_another_seed_others():
    a, b = make_scenes(20, "train", seed=3), make_scenes(20, "train", seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], make_scenes(20, "train", seed=4)[0])
    # scene i does not depend on how many scenes are asked for
    np.testing.assert_array_equal(make_scenes(5, "train", seed=3)[1], a[1][:5])


def test_train_scenes_use_training_digits_and_test_scenes_the_held_out_ones(sample):
    train, test = make_scenes(10, "train"), make_scenes(10, "test")
    np.testing.assert_array_equal(train[0], make_scenes(10, "train", digits=(
        sample.x_train, sample.y_train))[0])
    np.testing.assert_array_equal(test[0], make_scenes(10, "test", digits=(
        sample.x_test, sample.y_test))[0])
    assert not np.array_equal(test[0], make_scenes(10, "test", digits=(
        sample.x_train, sample.y_train))[0])


def test_labels_follow_the_ink_core_digit_edge_ignored_background_zero():
    x, y = make_scenes(50, "test", seed=1)
    ink = x[:, 0]
    assert ((y == 0) == (ink == 0)).all()                      # no ink: background
    assert ((y == IGNORE) == ((ink > 0) & (ink < 128))).all()   # anti-aliased edge: ignored
    core = ink >= 128
    assert ((y >= 1) & (y <= 10))[core].all()                  # stroke core: a digit class


def test_each_digit_region_holds_one_class_of_the_documented_size():
    """A single known digit (a 7 drawn from a one-digit pool) gives only class 8 ink,
    in a box 21 to 42 pixels wide."""
    seven = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    seven[0, 0, 4:24, 6:22] = 255                              # a solid block of "ink"
    x, y = make_scenes(30, "train", digits=(seven, np.array([7])), max_digits=1)
    for img, mask in zip(x, y):
        rows, _ = np.nonzero(mask == 8)
        assert 8 in mask and set(np.unique(mask).tolist()) <= {0, 8, IGNORE}
        height = rows.max() - rows.min() + 1               # the block's core, scaled
        assert round(20 * 0.75) - 1 <= height <= round(20 * 1.5) + 1


def test_several_digits_per_scene_never_overlap():
    _, y = make_scenes(200, "train", seed=2)
    counts = [len(set(np.unique(m).tolist()) - {0, IGNORE}) for m in y]
    assert max(counts) >= 2 and min(counts) >= 1


def test_dataset_statistics_and_classes():
    data = scene_dataset(40, 10)
    assert data.class_names[0] == "background" and data.num_classes == 11
    scaled = data.x_train / 255.0
    assert data.mean[0] == pytest.approx(scaled.mean()) and data.std[0] == pytest.approx(scaled.std())
    assert data.y_train.shape == (40, 64, 64) and data.x_test.shape == (10, 1, 64, 64)


@pytest.mark.parametrize("kwargs, words", [({"split": "val"}, "'train' or 'test'"),
                                           ({"size": 32}, "at least 42"),
                                           ({"max_digits": 0}, "max_digits >= 1")])
def test_bad_arguments_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        make_scenes(2, **kwargs)
