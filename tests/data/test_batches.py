"""BatchIterator: seeded order, shards, last batch, normalisation, augmentation, memory."""

import tracemalloc

import numpy as np
import pytest

from volnet.data import BatchIterator
from volnet.errors import ConfigError, DataError


def ids_dataset(n, h=4, w=4):
    """Images whose pixels all hold the example's index (mod 256): batches reveal their ids."""
    x = np.repeat((np.arange(n) % 256).astype(np.uint8), h * w).reshape(n, 1, h, w)
    return x, np.arange(n) % 10


def seen_ids(it, epoch, skip=0):
    return [yb for _, yb in it.batches(epoch, skip)]


def test_epoch_order_is_seeded_and_changes_per_epoch():
    x, y = ids_dataset(50)
    a, b = BatchIterator(x, y, 8, seed=3), BatchIterator(x, y, 8, seed=3)
    assert np.array_equal(a.order(0), b.order(0))
    assert not np.array_equal(a.order(0), a.order(1))
    assert not np.array_equal(a.order(0), BatchIterator(x, y, 8, seed=4).order(0))
    assert sorted(a.order(0)) == list(range(50))


def test_batches_cover_the_epoch_once():
    x, y = ids_dataset(50)
    it = BatchIterator(x, y, 8, seed=1)
    ids = np.concatenate([np.rint(xb[:, 0, 0, 0] * 255).astype(int) for xb, _ in it.batches(2)])
    assert np.array_equal(ids, it.order(2)) and len(it) == 7


@pytest.mark.parametrize("drop_last, sizes", [(False, [8] * 6 + [2]), (True, [8] * 6)])
def test_last_batch_policy(drop_last, sizes):
    x, y = ids_dataset(50)
    it = BatchIterator(x, y, 8, drop_last=drop_last)
    assert [len(yb) for yb in seen_ids(it, 0)] == sizes and len(it) == len(sizes)


@pytest.mark.parametrize("n, world", [(48, 4), (50, 4), (7, 3), (5, 8)])
def test_shards_are_disjoint_covering_and_equal_sized(n, world):
    x, y = ids_dataset(n)
    shards = [BatchIterator(x, y, 4, seed=9, shard=(r, world)).shard_indices(1) for r in range(world)]
    assert len({len(s) for s in shards}) == 1                     # same number of steps
    together = np.concatenate(shards)
    assert set(together) == set(range(n))                        # covering
    if n % world == 0:
        assert len(together) == n                                 # disjoint
    else:
        assert len(together) - n == (-n) % world                  # only the wrap-around pad repeats


def test_skip_continues_where_an_uninterrupted_epoch_was():
    x, y = ids_dataset(50)
    for world in (1, 2):
        it = BatchIterator(x, y, 4, seed=2, flip=True, crop_padding=1, shard=(world - 1, world))
        full = list(it.batches(3))
        tail = list(it.batches(3, skip=3 * it.examples_per_step))
        assert len(tail) == len(full) - 3
        for (xa, ya), (xb, yb) in zip(full[3:], tail):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_skip_with_another_world_size_covers_the_rest_of_the_epoch():
    x, y = ids_dataset(40)
    done = BatchIterator(x, y, 5, seed=2, shuffle=True).order(0)[:10]
    rest = [BatchIterator(x, y, 5, seed=2, shard=(r, 3)).shard_indices(0, skip=10) for r in range(3)]
    assert set(np.concatenate(rest)) == set(range(40)) - set(done.tolist())


def test_normalisation_per_channel():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 3, 2, 2), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    it = BatchIterator(x, np.zeros(6, int), 6, shuffle=False, mean=mean, std=std)
    xb, _ = next(iter(it.batches(0)))
    expect = (x / 255.0 - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb, expect, rtol=1e-5, atol=1e-6)


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = np.arange(1, 26, dtype=np.uint8).reshape(1, 1, 5, 5).repeat(40, axis=0)
    it = BatchIterator(x, np.zeros(40, int), 40, crop_padding=2)
    xb, _ = next(iter(it.batches(0)))
    padded = np.pad(x[0, 0] / 255.0, 2)
    offsets = set()
    for img in xb[:, 0]:
        hits = [(i, j) for i in range(5) for j in range(5)
                if np.allclose(padded[i:i + 5, j:j + 5], img, atol=1e-6)]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 5                                       # offsets really vary


def test_flip_mirrors_about_half_the_images():
    x = np.arange(4, dtype=np.uint8).reshape(1, 1, 1, 4).repeat(200, axis=0)
    xb, _ = next(iter(BatchIterator(x, np.zeros(200, int), 200, flip=True).batches(0)))
    flipped = np.all(np.isclose(xb[:, 0, 0], x[0, 0, 0, ::-1] / 255.0), axis=1)
    kept = np.all(np.isclose(xb[:, 0, 0], x[0, 0, 0] / 255.0), axis=1)
    assert np.all(flipped | kept) and 60 < flipped.sum() < 140


def test_no_copy_of_the_dataset_per_epoch():
    x, y = ids_dataset(4000, 28, 28)                              # 3.1 MB of uint8
    it = BatchIterator(x, y, 64, mean=0.5, std=0.5, flip=True)
    tracemalloc.start()
    for _ in it.batches(0):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < x.nbytes / 4                                     # a float copy would be 4x x


@pytest.mark.parametrize("kwargs, error", [
    ({"batch_size": 0}, ConfigError), ({"shard": (2, 2)}, ConfigError),
    ({"mean": (0.1, 0.2)}, ConfigError), ({"std": 0.0, "mean": 0.0}, ConfigError),
    ({"crop_padding": -1}, ConfigError)])
def test_bad_arguments(kwargs, error):
    x, y = ids_dataset(4)
    with pytest.raises(error):
        BatchIterator(x, y, **{"batch_size": 2, **kwargs})


def test_bad_arrays():
    with pytest.raises(DataError, match="labels"):
        BatchIterator(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(3, int))
    with pytest.raises(DataError, match="integers"):
        BatchIterator(np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4))
