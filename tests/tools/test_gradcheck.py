"""volnet.tools.gradcheck: the user-facing gradient checker agrees with hand-computed values,
passes correct layers, fails wrong ones, and leaves the layer as it found it."""

import numpy as np
import pytest

import volnet as vn
from volnet.tools.gradcheck import check_gradients, numerical_gradient, relative_error


def test_numerical_gradient_of_known_functions():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = numerical_gradient(lambda: float(np.sum(a ** 3)), a)
    np.testing.assert_allclose(grad, 3 * a ** 2, rtol=1e-8)
    np.testing.assert_array_equal(a, [[1.0, -2.0], [0.5, 3.0]])          # restored in place
    partial = numerical_gradient(lambda: float(np.sum(np.sin(a))), a, indices=[1, 2])
    np.testing.assert_allclose(partial.reshape(-1)[[1, 2]], np.cos(a).reshape(-1)[[1, 2]], rtol=1e-8)
    assert partial.reshape(-1)[0] == 0 and partial.reshape(-1)[3] == 0


def test_relative_error_hand_computed():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(0.2 / 4.2)
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.zeros(0), np.zeros(0)) == 0.0
    # an entry 1e6 times below the largest is judged against 1% of the largest, not itself
    assert relative_error(np.array([1.0, 1e-6]), np.array([1.0, 2e-6])) == pytest.approx(1e-6 / 0.02)


@pytest.mark.parametrize("build, shape, training", [
    (lambda: vn.Linear(4, 3, rng=0), (3, 4), False),
    (lambda: vn.Conv2d(2, 3, 3, stride=2, padding=1, rng=0), (2, 2, 5, 5), False),
    (lambda: vn.Sequential(vn.Conv2d(2, 3, 3, bias=False, rng=0), vn.BatchNorm2d(3), vn.Tanh(), vn.Flatten(),
                           vn.Dropout(0.5, rng=1), vn.Linear(12, 2, rng=2)), (3, 2, 4, 4), True),
])
def test_correct_layers_pass_with_every_parameter_reported(build, shape, training):
    layer = build().astype("float64")
    x = np.random.default_rng(3).standard_normal(shape)
    errors = check_gradients(layer, x, rng=0, training=training)
    assert set(errors) == {"input"} | {name for name, _, _ in layer.named_params()}
    assert max(errors.values()) < 1e-6, errors


def test_a_wrong_backward_fails():
    class OffByOne(vn.Linear):
        def _backward(self, dout):
            dx = super()._backward(dout)
            self.grads["bias"] = self.grads["bias"] + 1e-3
            return dx

    layer = OffByOne(3, 2, rng=0).astype("float64")
    errors = check_gradients(layer, np.random.default_rng(0).standard_normal((4, 3)), rng=0)
    assert errors["bias"] > 1e-5 and errors["input"] < 1e-7 and errors["weight"] < 1e-7


def test_layer_state_and_dropout_stream_are_restored():
    net = vn.Sequential(vn.BatchNorm1d(3), vn.Dropout(0.5, rng=4)).astype("float64")
    state = net.state_dict()
    rng_state = net[1].rng.bit_generator.state
    check_gradients(net, np.random.default_rng(1).standard_normal((5, 3)), rng=0, training=True)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, state[key])
    assert net[1].rng.bit_generator.state == rng_state


def test_max_entries_probes_a_subset():
    layer = vn.Conv2d(3, 4, 3, rng=0).astype("float64")
    errors = check_gradients(layer, np.random.default_rng(2).standard_normal((2, 3, 6, 6)), rng=0,
                             max_entries=10)
    assert max(errors.values()) < 1e-6


def test_float32_is_refused():
    with pytest.raises(vn.DTypeError, match="float64"):
        check_gradients(vn.Linear(2, 2), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="astype"):
        check_gradients(vn.Linear(2, 2).astype("float64"), np.zeros((1, 2), np.float32))
