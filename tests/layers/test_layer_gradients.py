"""Float64 central-difference gradient checks of every layer and container in LAYER_CASES.

For each case: the input gradient and the gradient of every parameter (biases, BN's
gamma/beta, every parameter of every child of a container) agree with central
differences (eps 1e-6) to a normwise relative error below 1e-6. Training-mode cases
differentiate through batch statistics and through the (re-seeded) dropout mask.
"""

import numpy as np
import pytest
from layer_cases import CASE_IDS, LAYER_CASES, gradient_errors

import volnet as vn

TOLERANCE = 1e-6


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_gradients_match_central_differences(case):
    layer = case.layer()
    errors = gradient_errors(layer, case.x(), case.training)
    assert set(errors) == {"input"} | {name for name, _, _ in layer.named_params()}
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.id in
                                  ("conv_stride_pad", "maxpool_pad", "batchnorm2d_train", "nested")],
                         ids=lambda c: c.id)
def test_batch_of_one(case):
    layer = case.layer()
    x = case.x(n=1)                  # batch norm: 1 x 3 x 4 values per channel is still a batch
    errors = gradient_errors(layer, x, case.training)
    assert max(errors.values()) < TOLERANCE, errors


def test_every_parameter_is_checked():
    """The harness reports each parameter of a nested network by its dotted name (biases included)."""
    case = next(c for c in LAYER_CASES if c.id == "nested")
    layer = case.layer()
    names = {name for name, _, _ in layer.named_params()}
    assert {"0.0.weight", "0.0.bias", "1.body.2.bias", "2.0.weight", "6.weight", "6.bias"} <= names
    assert len(names) == sum(len(lay.params) for _, lay in layer.named_layers())
    assert set(gradient_errors(layer, case.x(), True)) == names | {"input"}


def test_a_wrong_gradient_is_caught():
    """The harness is not vacuous: a layer whose backward is off by 1% fails it."""
    class Broken(vn.Tanh):
        def _backward(self, dout):
            return 1.01 * super()._backward(dout)

    x = np.random.default_rng(0).standard_normal((2, 3))
    assert gradient_errors(Broken(), x, False)["input"] > 1e-3
