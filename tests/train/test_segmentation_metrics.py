"""Confusion matrix, pixel accuracy and IoU against values worked out by hand."""

import numpy as np
import pytest

import volnet as vn
from volnet.train.segmentation_metrics import (
    class_iou,
    confusion_matrix,
    evaluate_segmentation,
    mean_iou,
    pixel_accuracy,
)

#   target           prediction
#   0 0 1 255        0 1 1 2
#   2 2 1 1          2 0 1 1
TARGET = np.array([[[0, 0, 1, 255], [2, 2, 1, 1]]])
PRED = np.array([[[0, 1, 1, 2], [2, 0, 1, 1]]])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, 4)
    # rows true, columns predicted; the ignored pixel (predicted 2) is left out
    expected = [[1, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert cm.tolist() == expected


def test_pixel_accuracy_and_iou_by_hand():
    cm = confusion_matrix(PRED, TARGET, 4)
    assert pixel_accuracy(cm) == pytest.approx(5 / 7)
    # class 0: TP 1, FP 1 (a 2 called 0), FN 1 -> 1/3; class 1: TP 3, FP 1, FN 0 -> 3/4;
    # class 2: TP 1, FP 0, FN 1 -> 1/2; class 3: never labelled nor predicted -> NaN
    iou = class_iou(cm)
    np.testing.assert_allclose(iou[:3], [1 / 3, 3 / 4, 1 / 2])
    assert np.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_evaluate_segmentation_with_a_fixed_network():
    """A 1x1 convolution whose scores favour class (pixel > 0.5): its predictions are known."""
    conv = vn.Conv2d(1, 2, 1, rng=0)
    conv.params["weight"][...] = np.array([-1.0, 1.0]).reshape(2, 1, 1, 1)
    conv.params["bias"][...] = np.array([0.5, -0.5])
    net = vn.Sequential(conv)
    x = np.array([[[[0.0, 1.0], [1.0, 0.2]]]], dtype=np.float32)
    masks = np.array([[[0, 1], [0, 255]]])
    result = evaluate_segmentation(net, x, masks)
    assert result["confusion"].tolist() == [[1, 1], [0, 1]]
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)
    assert result["mean_iou"] == pytest.approx((1 / 2 + 1 / 2) / 2)
