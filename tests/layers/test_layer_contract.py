"""The rest of the layer contract: backward overwrites grads, copy/astype/freeze, predict,
parameter counts against torch, and the random-direction VJP test on mid-size shapes that
reach the fast kernels' other paths (many channels, several chunks)."""

import numpy as np
import pytest
from layer_cases import CASE_IDS, LAYER_CASES, reseed_dropout, to_torch

import volnet as vn
from volnet.functional import conv_gemm


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_param_count_equals_torch(case):
    layer = case.layer()
    assert layer.num_params() == sum(p.numel() for p in to_torch(layer).parameters())


def test_backward_overwrites_instead_of_accumulating():
    layer = vn.Linear(3, 2, rng=0).astype(np.float64)
    x = np.random.default_rng(1).standard_normal((4, 3))
    layer.forward(x, training=True)
    layer.backward(np.ones((4, 2)))
    first = layer.grads["weight"].copy()
    layer.forward(x, training=True)
    layer.backward(np.ones((4, 2)))
    np.testing.assert_array_equal(layer.grads["weight"], first)
    np.testing.assert_allclose(first, np.ones((2, 4)) @ x, rtol=1e-15)


def test_copy_shares_no_arrays_and_astype_converts_everything():
    net = vn.Sequential(vn.Conv2d(2, 3, 3, rng=0), vn.BatchNorm2d(3))
    dup = net.copy()
    dup[0].params["weight"][...] = 0.0
    dup[1].buffers["running_mean"][...] = 5.0
    assert net[0].params["weight"].any() and not net[1].buffers["running_mean"].any()
    dup.astype(np.float64)
    assert all(v.dtype == np.float64 for k, v in dup.state_dict().items() if "num_batches" not in k)
    assert dup.state_dict()["1.num_batches_tracked"].dtype == np.int64
    assert net[0].params["weight"].dtype == np.float32


def test_freeze_patterns_select_trainable_params():
    net = vn.Sequential({"features": vn.Sequential(vn.Conv2d(2, 3, 3), vn.BatchNorm2d(3)),
                         "head": vn.Linear(3, 2)})
    net.freeze("features.*")
    assert [n for n, _, _ in net.named_params(trainable_only=True)] == ["head.weight", "head.bias"]
    assert net.num_params(trainable_only=True) == 8 and net.num_params() == 8 + (2 * 3 * 9 + 3) + 6
    net.unfreeze("features.1.*")
    assert [n for n, _, _ in net.named_params(trainable_only=True)] == [
        "features.1.weight", "features.1.bias", "head.weight", "head.bias"]
    assert not vn.BatchNorm1d(4, affine=False).num_params(trainable_only=True)


def test_predict_is_batched_softmax_of_inference_scores():
    net = vn.Sequential(vn.Flatten(), vn.Linear(12, 4, rng=0), vn.Dropout(0.5, rng=1))
    x = np.random.default_rng(2).standard_normal((7, 3, 2, 2)).astype(np.float32)
    scores = net.forward(x)
    expected = np.exp(scores - scores.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(net.predict(x, batch_size=3), expected, rtol=1e-6)
    np.testing.assert_allclose(net.predict(x, batch_size=3), net.predict(x), rtol=1e-6)
    assert net.predict(x[:0]).shape == (0, 4)


VJP_CASES = [
    (lambda: vn.Conv2d(32, 8, 3, padding=1), (32, 9, 9)),               # flipped-filter dx path
    (lambda: vn.Conv2d(32, 8, 3, padding=2, dilation=2, groups=4), (32, 8, 7)),
    (lambda: vn.Conv2d(20, 6, 1), (20, 8, 8)),                          # 1x1 as a plain product
    (lambda: vn.Conv2d(18, 4, 5, stride=3, padding=2), (18, 11, 9)),
    (lambda: vn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (8, 11, 10)),
    (lambda: vn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (8, 11, 10)),
    (lambda: vn.BatchNorm2d(8), (8, 6, 6)),
    (lambda: vn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0), (16, 4, 4)),
]


@pytest.mark.parametrize("chunk_bytes", [conv_gemm.CHUNK_BYTES, 1])
@pytest.mark.parametrize("build, shape", VJP_CASES)
def test_vjp_dot_product(build, shape, chunk_bytes, monkeypatch):
    """<J t, c> by central differences along a random direction t equals <t, J^T c> from backward."""
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", chunk_bytes)   # 1 byte: one sample per chunk
    layer = build().astype(np.float64)
    rng = np.random.default_rng(3)
    x = rng.permutation(4 * int(np.prod(shape))).reshape((4,) + shape) / 100.0 - 10.0   # distinct values
    reseed_dropout(layer)
    out = layer.forward(x, training=True)
    c = rng.standard_normal(out.shape)
    dx = layer.backward(c)
    t = rng.standard_normal(x.shape)
    eps = 1e-5
    jt = (layer.forward(x + eps * t, training=True) - layer.forward(x - eps * t, training=True)) / (2 * eps)
    lhs, rhs = float(np.sum(jt * c)), float(np.sum(t * dx))
    assert abs(lhs - rhs) <= 1e-6 * (np.abs(jt * c).sum() + np.abs(t * dx).sum())
