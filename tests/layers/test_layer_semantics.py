"""What individual layers promise beyond gradients: dropout's inverted scaling and seeding,
He initialisation, ReLU's exact zeros, Identity/Flatten order, adaptive pooling and LRN edges."""

import numpy as np
import pytest
import torch

import volnet as vn


def test_dropout_is_inverted_and_seeded():
    x = np.ones((200, 500), np.float32)
    out = vn.Dropout(0.3, rng=7).forward(x, training=True)
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)            # survivors scaled by 1/(1-p)
    assert abs(kept.mean() - 0.7) < 0.01                                # 100k draws: sd ~0.0015
    assert abs(out.mean() - 1.0) < 0.02                                 # expectation preserved
    np.testing.assert_array_equal(vn.Dropout(0.3, rng=7).forward(x, training=True), out)
    assert not np.array_equal(vn.Dropout(0.3, rng=8).forward(x, training=True), out)
    np.testing.assert_array_equal(vn.Dropout(0.3, rng=7).forward(x), x)   # inference: identity


def test_dropout_backward_uses_the_forward_mask():
    layer = vn.Dropout(0.5, rng=1)
    x = np.random.default_rng(0).standard_normal((4, 6))
    out = layer.forward(x, training=True)
    dout = np.random.default_rng(2).standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(dout), dout * np.where(out != 0, 2.0, 0.0), rtol=1e-15)


@pytest.mark.parametrize("build, fan_in", [(lambda: vn.Conv2d(16, 64, 3, rng=0), 16 * 9),
                                           (lambda: vn.Conv2d(16, 64, 3, groups=4, rng=0), 4 * 9),
                                           (lambda: vn.Linear(300, 200, rng=0), 300)])
def test_default_init_is_he_normal_with_zero_bias(build, fan_in):
    layer = build()
    w = layer.params["weight"]
    assert w.dtype == np.float32 and abs(w.mean()) < 0.01
    np.testing.assert_allclose(w.std(), np.sqrt(2.0 / fan_in), rtol=0.05)
    np.testing.assert_array_equal(layer.params["bias"], 0.0)
    np.testing.assert_array_equal(build().params["weight"], w)          # same seed, same weights


def test_relu_gives_exact_positive_zeros():
    out = vn.ReLU().forward(np.array([[-1e4, -0.0, -1e-30, 2.0]], np.float32))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 0.0, 2.0]])
    assert not np.signbit(out).any()


def test_flatten_uses_torch_order():
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(vn.Flatten().forward(x), torch.flatten(torch.tensor(x), 1).numpy())


@pytest.mark.parametrize("out_size", [(3, 4), (1, 5), (4, 1)])
def test_adaptive_pool_upsamples_like_torch(out_size):
    """Output larger than the input: windows overlap, as in torch."""
    x = np.random.default_rng(3).standard_normal((2, 3, 2, 3))
    layer = vn.AdaptiveAvgPool2d(out_size)
    out = layer.forward(x, cache=True)
    dout = np.random.default_rng(4).standard_normal(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.adaptive_avg_pool2d(xt, out_size)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 7, 10])
def test_lrn_window_wider_than_channels_matches_torch(size):
    x = np.random.default_rng(5).standard_normal((2, 4, 3, 3))
    layer = vn.LocalResponseNorm(size, alpha=0.5, beta=0.7, k=1.5)
    out = layer.forward(x, cache=True)
    dout = np.random.default_rng(6).standard_normal(out.shape)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.local_response_norm(xt, size, 0.5, 0.7, 1.5)
    ref.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_batchnorm_eval_uses_running_statistics_only():
    bn = vn.BatchNorm2d(2).astype(np.float64)
    bn.buffers["running_mean"][...] = [1.0, -2.0]
    bn.buffers["running_var"][...] = [4.0, 0.25]
    x = np.random.default_rng(7).standard_normal((3, 2, 2, 2))
    expected = (x - np.array([1.0, -2.0]).reshape(1, 2, 1, 1)) / np.sqrt(
        np.array([4.0, 0.25]).reshape(1, 2, 1, 1) + 1e-5)
    np.testing.assert_allclose(bn.forward(x), expected, rtol=1e-12)
    assert bn.buffers["num_batches_tracked"] == 0
