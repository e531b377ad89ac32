"""Weight-derived caches are never stale: every way a parameter is written invalidates them.

The oracle is PyTorch's float64 convolution of the weights as they are *now*, and, bit for
bit, the same kernels run with the cache off. Each test first proves that the cache was
hit (otherwise a "still correct" result would prove nothing).
"""

import gc

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.functional import conv_choice, weight_cache
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


@pytest.fixture(autouse=True, params=["winograd4", "direct"])
def cached_kernel(request, monkeypatch):
    """Small layers take one of the two kernels whose inference keeps a weight-derived
    array (Winograd's filter transform, the direct kernel's packed filters), with the
    compiled kernels on."""
    monkeypatch.setattr(conv_choice, "DIRECT", request.param == "direct")
    monkeypatch.setattr(conv_choice, "OUTER", False)    # reads the weights in place: no cache
    monkeypatch.setattr(conv_choice, "WINOGRAD", request.param == "winograd4")
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    monkeypatch.setattr(weight_cache, "BUDGET_BYTES", 64 << 20)
    weight_cache.clear()
    with backend.use_kernels("numba"):
        assert conv_choice.plan((2, 16, 10, 10), (16, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                (10, 10), np.float32).forward == request.param
        yield
    weight_cache.clear()


def _net(seed=0):
    return vn.Sequential(vn.Conv2d(16, 16, 3, padding=1, rng=seed), vn.ReLU(),
                         vn.Conv2d(16, 8, 3, padding=1, rng=seed + 1))


def _torch_reference(net, x):
    out = torch.tensor(x, dtype=torch.float64)
    for layer in net:
        if isinstance(layer, vn.Conv2d):
            out = torch.nn.functional.conv2d(
                out, torch.tensor(layer.params["weight"], dtype=torch.float64),
                torch.tensor(layer.params["bias"], dtype=torch.float64), padding=1)
        else:
            out = torch.relu(out)
    return out.numpy()


def _uncached(net, x, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(weight_cache, "BUDGET_BYTES", 0)
        return net.forward(x)


def _check(net, x, monkeypatch):
    """Inference now equals PyTorch on the current weights and the uncached kernels bit for bit."""
    hits = weight_cache.stats()["hits"]
    out = net.forward(x)
    ref = _torch_reference(net, x)
    # normwise, as the Winograd parity tests (test_compiled_conv.py): after an SGD step
    # the outputs reach 5e4, and F(4x4)'s float32 error (~1e-6 of that) exceeds an
    # elementwise 1e-4 on the small entries
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()
    np.testing.assert_array_equal(out, _uncached(net, x, monkeypatch))
    return out, weight_cache.stats()["hits"] - hits


@pytest.fixture
def warm(monkeypatch):
    """A network whose two filter transforms are cached, its input and its output."""
    net = _net()
    x = np.random.default_rng(3).standard_normal((2, 16, 10, 10)).astype(np.float32)
    net.forward(x)
    out, hits = _check(net, x, monkeypatch)
    assert hits == 2, "the second inference call must reuse both cached transforms"
    return net, x, out


def test_optimizer_step_invalidates_compiled_and_numpy(warm, monkeypatch):
    net, x, before = warm
    opt = vn.SGD(net, lr=0.1, momentum=0.9)
    for kernels in ("numba", "numpy"):
        with backend.use_kernels(kernels):
            out = net.forward(x, training=True)
            net.backward(out - 1.0)
            opt.step()
        after, hits = _check(net, x, monkeypatch)
        assert hits == 0 and not np.array_equal(after, before)
        before = after


def test_load_state_dict_invalidates(warm, monkeypatch):
    net, x, before = warm
    net.load_state_dict(_net(seed=7).state_dict())
    after, hits = _check(net, x, monkeypatch)
    assert hits == 0 and not np.array_equal(after, before)


def test_astype_round_trip_and_copy_are_new_weights(warm, monkeypatch):
    net, x, before = warm
    net.astype(np.float64).astype(np.float32)       # new arrays, same values
    after, hits = _check(net, x, monkeypatch)
    np.testing.assert_array_equal(after, before)
    clone = net.copy()
    clone[0].params["weight"][...] *= -1.0
    flipped, _ = _check(clone, x, monkeypatch)
    assert not np.array_equal(flipped, before)
    np.testing.assert_array_equal(_check(net, x, monkeypatch)[0], before)   # original untouched


def test_user_in_place_edits_invalidate(warm, monkeypatch):
    net, x, before = warm
    conv = net[0]
    conv.params["weight"][...] = conv.params["weight"] * 0.5
    half, hits = _check(net, x, monkeypatch)
    assert hits == 1 and not np.array_equal(half, before)      # only the second layer reused
    conv.params["weight"][3, 2, 1, 1] += 1.0                    # one tap of one filter
    one_tap, _ = _check(net, x, monkeypatch)
    assert not np.array_equal(one_tap, half)
    w = net[2].params["weight"]
    w[0, 0, 0, 0] = np.nextafter(w[0, 0, 0, 0], np.float32(np.inf))   # one ulp
    misses = weight_cache.stats()["misses"]
    _check(net, x, monkeypatch)
    assert weight_cache.stats()["misses"] > misses


def test_replacing_the_array_and_signed_zero(warm, monkeypatch):
    net, x, before = warm
    conv = net[2]
    conv.params["weight"] = conv.params["weight"].copy()        # same values, new object
    after, hits = _check(net, x, monkeypatch)
    assert hits == 1
    np.testing.assert_array_equal(after, before)
    w = conv.params["weight"]
    w[...] = 0.0
    _check(net, x, monkeypatch)
    misses = weight_cache.stats()["misses"]
    w[0, 0, 0, 0] = -0.0          # equal as numbers, another bit pattern: still re-derived
    _check(net, x, monkeypatch)
    assert weight_cache.stats()["misses"] == misses + 1


def test_derived_arrays_are_read_only_and_bounded(monkeypatch):
    a, b = np.ones(1000, np.float32), np.zeros(1000, np.float32)
    first = weight_cache.derived((a,), "double", lambda: a * 2)
    with pytest.raises(ValueError):
        first[0] = 5.0
    assert weight_cache.derived((a,), "double", lambda: a * 3) is first
    monkeypatch.setattr(weight_cache, "BUDGET_BYTES", 12000)   # room for one entry of 8 kB
    weight_cache.derived((b,), "double", lambda: b * 2)
    assert weight_cache.stats()["entries"] == 1
    assert weight_cache.derived((a,), "double", lambda: a * 3)[0] == 3.0   # evicted, re-made
    del a, first
    gc.collect()
    assert weight_cache.stats()["entries"] <= 1
