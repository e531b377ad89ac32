"""Per-pixel softmax cross-entropy: PyTorch's cross_entropy (ignore_index, weight) as the
oracle, a float64 finite-difference gradient check, and its error messages."""

import numpy as np
import pytest
import torch

from volnet.errors import DTypeError, ShapeError
from volnet.functional.pixel_loss import pixel_cross_entropy


def _case(seed, n=2, k=5, h=4, w=3, ignored=0.3):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, (n, k, h, w))
    labels = rng.integers(0, k, (n, h, w))
    labels[rng.random((n, h, w)) < ignored] = 255
    return scores, labels


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_gradient_match_torch_cross_entropy(weighted, dtype):
    scores, labels = _case(0)
    scores = scores.astype(dtype)
    weight = np.array([0.2, 1.0, 3.0, 0.5, 2.0]) if weighted else None
    loss, grad = pixel_cross_entropy(scores, labels, 255, weight)
    s = torch.tensor(scores, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(
        s, torch.tensor(labels), ignore_index=255,
        weight=None if weight is None else torch.tensor(weight, dtype=s.dtype))
    ref.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(ref.item(), rel=tol)
    assert grad.dtype == dtype and grad.shape == scores.shape
    np.testing.assert_allclose(grad, s.grad.numpy(), rtol=tol, atol=tol)


def test_gradient_matches_finite_differences_in_float64():
    scores, labels = _case(1, n=1, k=3, h=3, w=2)
    weight = np.array([0.5, 2.0, 1.0])
    _, grad = pixel_cross_entropy(scores, labels, 255, weight)
    eps, numeric = 1e-6, np.zeros_like(scores)
    for idx in np.ndindex(scores.shape):
        up, down = scores.copy(), scores.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (pixel_cross_entropy(up, labels, 255, weight)[0] -
                        pixel_cross_entropy(down, labels, 255, weight)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_ignored_pixels_get_no_gradient_and_an_all_ignored_batch_costs_nothing():
    scores, labels = _case(2)
    _, grad = pixel_cross_entropy(scores, labels)
    assert (np.moveaxis(grad, 1, -1)[labels == 255] == 0).all()
    loss, grad = pixel_cross_entropy(scores, np.full_like(labels, 255))
    assert loss == 0.0 and not grad.any()


def test_hand_computed_value():
    # two pixels, two classes: scores (0, ln 3) -> p = (1/4, 3/4); label 1 costs ln(4/3),
    # label 0 costs ln 4; class weights 1 (class 0) and 3 (class 1): (ln 4 + 3 ln(4/3)) / 4
    scores = np.array([[[[0.0, 0.0]], [[np.log(3), np.log(3)]]]])
    loss, _ = pixel_cross_entropy(scores, np.array([[[1, 0]]]), weight=[1.0, 3.0])
    assert loss == pytest.approx((np.log(4) + 3 * np.log(4 / 3)) / 4)


@pytest.mark.parametrize("scores, labels, error, words", [
    (np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 3), int), ShapeError, "one class index per pixel"),
    (np.zeros((1, 3, 2, 2)), np.full((1, 2, 2), 3), ShapeError, "found \\[3\\]"),
    (np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2)), DTypeError, "integer class indices"),
    (np.zeros((1, 3, 2, 2), int), np.zeros((1, 2, 2), int), DTypeError, "float array"),
])
def test_bad_input_is_named(scores, labels, error, words):
    with pytest.raises(error, match=words):
        pixel_cross_entropy(scores, labels)


def test_bad_weights_are_refused():
    with pytest.raises(ShapeError, match="3 finite values"):
        pixel_cross_entropy(np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2), int), weight=[1.0, 2.0])
