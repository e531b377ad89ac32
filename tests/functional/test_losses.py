"""Softmax cross-entropy and the multiclass SVM hinge loss: values and gradients against
PyTorch (``cross_entropy``, ``multi_margin_loss``) and central differences; stability for
huge scores; shift invariance; the CS231n sanity value ln(10); label validation."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import volnet as vn
from volnet.functional.loss import softmax, softmax_cross_entropy, svm_hinge_loss


def _case(seed, n=5, c=4, scale=3.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)) * scale, rng.integers(0, c, n)


def _torch(loss_fn, scores, labels):
    st_ = torch.tensor(scores, requires_grad=True)
    loss = loss_fn(st_, torch.tensor(labels))
    loss.backward()
    return loss.item(), st_.grad.numpy()


@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 7))
def test_cross_entropy_matches_torch(seed, n, c):
    scores, labels = _case(seed, n, c)
    loss, grad = softmax_cross_entropy(scores, labels)
    ref_loss, ref_grad = _torch(torch.nn.functional.cross_entropy, scores, labels)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-14)


@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 7))
def test_hinge_matches_torch_multi_margin_loss(seed, n, c):
    """torch divides the per-example sum by C; the CS231n SVM loss does not, hence the factor."""
    scores, labels = _case(seed, n, c)
    loss, grad = svm_hinge_loss(scores, labels)
    ref_loss, ref_grad = _torch(torch.nn.functional.multi_margin_loss, scores, labels)
    np.testing.assert_allclose(loss, c * ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, c * ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss_fn", [softmax_cross_entropy, svm_hinge_loss])
def test_gradient_matches_central_differences(loss_fn):
    scores, labels = _case(1, 4, 5)
    _, grad = loss_fn(scores, labels)
    numeric = np.zeros_like(scores)
    for idx in np.ndindex(scores.shape):
        old = scores[idx]
        scores[idx] = old + 1e-6
        plus = loss_fn(scores, labels)[0]
        scores[idx] = old - 1e-6
        minus = loss_fn(scores, labels)[0]
        scores[idx] = old
        numeric[idx] = (plus - minus) / 2e-6
    assert np.abs(grad - numeric).max() < 1e-7 * np.abs(numeric).max()


def test_hinge_cs231n_example():
    """The CS231n notes: scores cat [3.2, 5.1, -1.7] car [1.3, 4.9, 2.0] frog [2.2, 2.5, -3.1]."""
    scores = np.array([[3.2, 1.3, 2.2], [5.1, 4.9, 2.5], [-1.7, 2.0, -3.1]]).T
    loss, _ = svm_hinge_loss(scores, np.array([0, 1, 2]))
    np.testing.assert_allclose(loss, (2.9 + 0.0 + 12.9) / 3, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_scores(dtype):
    scores = np.array([[1e4, -1e4, 0.0], [1000.0, 0.0, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    loss, grad = softmax_cross_entropy(scores, np.array([1, 0, 2]))
    assert np.isfinite(loss) and np.isfinite(grad).all() and grad.dtype == dtype
    np.testing.assert_allclose(loss, (2e4 + 0.0 + np.log(3)) / 3, rtol=1e-6)
    probs = softmax(scores)
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


@given(st.integers(0, 10_000), st.floats(-1e3, 1e3))
def test_shift_invariance(seed, shift):
    scores, labels = _case(seed)
    for fn in (softmax_cross_entropy, svm_hinge_loss):
        loss, grad = fn(scores, labels)
        loss2, grad2 = fn(scores + shift, labels)
        np.testing.assert_allclose(loss2, loss, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(grad2, grad, atol=1e-9)
    np.testing.assert_allclose(softmax(scores + shift), softmax(scores), atol=1e-12)


def test_uniform_scores_give_ln10_and_a_small_init_net_starts_near_it():
    loss, grad = softmax_cross_entropy(np.zeros((4, 10)), np.array([0, 3, 9, 5]))
    np.testing.assert_allclose(loss, np.log(10), rtol=1e-12)
    np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-15)
    net = vn.Sequential(vn.Conv2d(3, 8, 3, padding=1, rng=0), vn.ReLU(), vn.MaxPool2d(2), vn.Flatten(),
                        vn.Linear(8 * 4 * 4, 10, rng=1))
    net[4].params["weight"] *= 0.01                   # CS231n: small final weights -> uniform scores
    rng = np.random.default_rng(2)
    scores = net.forward(rng.standard_normal((32, 3, 8, 8)).astype(np.float32))
    loss, _ = softmax_cross_entropy(scores, rng.integers(0, 10, 32))
    assert abs(loss - np.log(10)) < 0.1


@pytest.mark.parametrize("fn", [softmax_cross_entropy, svm_hinge_loss])
def test_label_and_score_validation(fn):
    scores = np.zeros((2, 3))
    with pytest.raises(vn.ShapeError, match=r"labels must lie in \[0, 3\); out of range at indices \[1\]"):
        fn(scores, np.array([0, 3]))
    with pytest.raises(vn.DTypeError, match="labels must be integers"):
        fn(scores, np.array([0.0, 1.0]))
    with pytest.raises(vn.ShapeError, match=r"expected labels of shape \(2,\)"):
        fn(scores, np.array([0]))
    with pytest.raises(vn.ShapeError, match="empty"):
        fn(np.zeros((0, 3)), np.zeros(0, int))
    with pytest.raises(vn.DTypeError, match="float array"):
        fn(np.zeros((2, 3), int), np.array([0, 1]))
    with pytest.raises(vn.ShapeError, match="2-D"):
        fn(np.zeros((2, 3, 1)), np.array([0, 1]))
    with pytest.raises(vn.NonFiniteError, match="NaN or infinity"):
        fn(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(TypeError):
        fn(np.zeros((2, 3), int), np.array([0, 1]))
