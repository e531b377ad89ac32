"""Bad input raises a VolnetError subclass that is also the builtin a caller expects, and the
message names the layer (its repr and its dotted path inside a network), what it expected
and what it got. Nothing is half-changed by a refused call.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import volnet as vn


def _net():
    return vn.Sequential({
        "features": vn.Sequential(vn.Conv2d(3, 4, 3, rng=0), vn.ReLU(), vn.MaxPool2d(2)),
        "classifier": vn.Sequential(vn.Flatten(), vn.Linear(16, 2, rng=1)),
    })


def _raises(cls, builtin, *fragments):
    """Context manager: raises ``cls`` (checked to also be ``builtin``) with every fragment in its message."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(cls)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self.ctx.__exit__(*exc)
            assert isinstance(self.info.value, vn.VolnetError) and isinstance(self.info.value, builtin)
            for fragment in fragments:
                assert fragment in str(self.info.value), (fragment, str(self.info.value))
            return suppressed
    return _Check()


X = np.zeros((2, 3, 6, 6), dtype=np.float32)


def test_wrong_channel_count_names_layer_path_expected_and_got():
    with _raises(vn.ShapeError, ValueError, "Conv2d(3, 4, kernel_size=(3, 3)) at features.0",
                 "expected 3 channels", "got 1", "(2, 1, 6, 6)"):
        _net().forward(np.zeros((2, 1, 6, 6), np.float32))


@pytest.mark.parametrize("shape", [(3, 6, 6), (2, 3, 6, 6, 1), (18,)])
def test_wrong_rank(shape):
    with _raises(vn.ShapeError, ValueError, "at features.0", "4-D input (N, C, H, W)", f"got shape {shape}"):
        _net().forward(np.zeros(shape, np.float32))


def test_linear_feature_mismatch_names_layer():
    with _raises(vn.ShapeError, ValueError, "Linear(in_features=16, out_features=2) at classifier.1",
                 "expected 16 input features", "got 144"):
        _net().forward(np.zeros((2, 3, 14, 14), np.float32))
    with _raises(vn.ShapeError, ValueError, "2-D input", "add Flatten()"):
        vn.Linear(4, 2).forward(np.zeros((2, 1, 2, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_, np.complex64])
def test_non_float_input(dtype):
    with _raises(vn.DTypeError, TypeError, "must be floating point", f"got dtype {np.dtype(dtype)}", "astype"):
        _net().forward(np.zeros((2, 3, 6, 6), dtype))


def test_non_array_input():
    with _raises(vn.DTypeError, TypeError, "NumPy array", "got list"):
        _net().forward([[1.0, 2.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_first_bad_index(bad):
    x = X.copy()
    x[1, 2, 3, 4] = bad
    with _raises(vn.NonFiniteError, ValueError, "NaN or infinity", "(1, 2, 3, 4)"):
        _net().forward(x)


def test_kernel_larger_than_padded_input():
    with _raises(vn.ShapeError, ValueError, "Conv2d(2, 3, kernel_size=(5, 5), padding=(1, 1))",
                 "window (5)", "padded input (2 + 2*1 = 4)"):
        vn.Conv2d(2, 3, 5, padding=1).forward(np.zeros((1, 2, 2, 7), np.float32))
    with _raises(vn.ShapeError, ValueError, "MaxPool2d", "at features.2", "padded input (1 + 2*0 = 1)"):
        _net().forward(np.zeros((1, 3, 3, 3), np.float32))
    with _raises(vn.ShapeError, ValueError, "dilated"):
        vn.Conv2d(1, 1, 3, dilation=3).output_shape((1, 6, 6))


def test_backward_before_forward_and_after_inference_forward():
    for net in (_net(), vn.Conv2d(3, 4, 3)):
        with _raises(vn.StateError, RuntimeError, "backward() needs a preceding forward", "training=True"):
            net.backward(np.zeros((2, 2), np.float32))
        net.forward(X)
        with _raises(vn.StateError, ValueError, "forward(x, training=False) keeps no cache"):
            net.backward(np.zeros((2, 2), np.float32))


def test_dout_of_wrong_shape_or_dtype():
    net = _net()
    net.forward(X, training=True)
    with _raises(vn.ShapeError, ValueError, "dout of the last output's shape (2, 2)", "got (2, 3)"):
        net.backward(np.zeros((2, 3), np.float32))
    with _raises(vn.DTypeError, TypeError, "dout must be floating point"):
        net.backward(np.zeros((2, 2), np.int32))


def test_batchnorm_training_needs_two_values_per_channel():
    with _raises(vn.ShapeError, ValueError, "BatchNorm2d(4)", "more than 1 value per channel", "(1, 4, 1, 1)"):
        vn.BatchNorm2d(4).forward(np.ones((1, 4, 1, 1), np.float32), training=True)
    assert vn.BatchNorm2d(4).forward(np.ones((1, 4, 1, 1), np.float32)).shape == (1, 4, 1, 1)


def test_residual_and_concat_shape_mismatch_name_the_block():
    block = vn.Residual(vn.Conv2d(3, 4, 3, padding=1))
    with _raises(vn.ShapeError, ValueError, "Residual", "add a projection shortcut"):
        block.output_shape((3, 5, 5))
    with _raises(vn.ShapeError, ValueError, "Residual", "add a projection shortcut"):
        block.forward(np.zeros((1, 3, 5, 5), np.float32))
    cat = vn.Concat(vn.Conv2d(3, 2, 1), vn.Conv2d(3, 2, 3))
    with _raises(vn.ShapeError, ValueError, "Concat", "disagree on spatial size"):
        cat.forward(np.zeros((1, 3, 5, 5), np.float32))


def test_softmax_axis_must_exist():
    with _raises(vn.ShapeError, ValueError, "Softmax(dim=2)", "(4, 3)"):
        vn.Softmax(dim=2).forward(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("build, fragment", [
    (lambda: vn.Conv2d(3, 4, 0), "kernel_size must be >= 1"),
    (lambda: vn.Conv2d(3, 4, (3, -1)), "kernel_size must be >= 1"),
    (lambda: vn.Conv2d(3, 4, 3, stride=0), "stride must be >= 1"),
    (lambda: vn.Conv2d(3, 4, 3, padding=-1), "padding must be >= 0"),
    (lambda: vn.Conv2d(3, 4, 3, dilation=0), "dilation must be >= 1"),
    (lambda: vn.Conv2d(3, 4, 3, groups=2), "groups=2 must divide both in_channels (3) and out_channels (4)"),
    (lambda: vn.Conv2d(4, 3, 3, groups=2), "must divide"),
    (lambda: vn.Conv2d(3, 4, 2.5), "kernel_size must be an int or a pair of ints, got 2.5"),
    (lambda: vn.Conv2d(3.5, 4, 3), "in_channels must be an int"),
    (lambda: vn.Conv2d(0, 4, 3), "in_channels and out_channels must be >= 1"),
    (lambda: vn.MaxPool2d(2, padding=2), "padding (2, 2) must be at most half the kernel size"),
    (lambda: vn.AvgPool2d(3, padding=2), "at most half the kernel size"),
    (lambda: vn.MaxPool2d(2, stride=0), "stride must be >= 1"),
    (lambda: vn.MaxPool2d(0), "kernel_size must be >= 1"),
    (lambda: vn.Dropout(1.0), "drop_prob must be in [0, 1), got 1.0"),
    (lambda: vn.Dropout(-0.1), "got -0.1"),
    (lambda: vn.Dropout(float("nan")), "got nan"),
    (lambda: vn.Linear(0, 3), "features must be >= 1"),
    (lambda: vn.BatchNorm2d(0), "num_features must be >= 1"),
    (lambda: vn.BatchNorm1d(3, momentum=1.5), "momentum"),
    (lambda: vn.BatchNorm2d(3, momentum=None), "momentum=None"),
    (lambda: vn.LocalResponseNorm(0), "size must be >= 1"),
    (lambda: vn.AdaptiveAvgPool2d(0), "output_size must be >= 1"),
    (lambda: vn.Softmax(dim=0), "batch axis"),
    (lambda: vn.Concat(), "at least one branch"),
    (lambda: vn.Sequential(vn.ReLU(), 3), "must be a volnet Layer, got int"),
])
def test_invalid_hyperparameters_raise_at_construction(build, fragment):
    with _raises(vn.ConfigError, ValueError, fragment):
        build()


def test_refused_state_dict_lists_every_problem_and_changes_nothing():
    net = _net()
    before = net.state_dict()
    state = _net().state_dict()
    state.pop("features.0.bias")
    state["classifier.1.weight"] = np.zeros((3, 4), np.float32)
    state["extra.weight"] = np.zeros(2, np.float32)
    state["features.0.weight"] = state["features.0.weight"] + 1
    with _raises(vn.StateDictError, ValueError, "missing key features.0.bias", "unexpected key extra.weight",
                 "shape mismatch for classifier.1.weight: checkpoint (3, 4) vs model (2, 16)", "strict=False"):
        net.load_state_dict(state)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_non_finite_or_non_numeric_state_refused():
    net = vn.Linear(2, 2)
    state = net.state_dict()
    state["weight"] = np.full((2, 2), np.nan)
    with _raises(vn.StateDictError, ValueError, "weight: contains NaN"):
        net.load_state_dict(state)
    state["weight"] = np.array([["a", "b"], ["c", "d"]])
    with _raises(vn.StateDictError, ValueError, "not numeric"):
        net.load_state_dict(state)


def test_errors_survive_python_O():
    """No check is an ``assert``: under ``python -O`` the same library errors are raised."""
    script = textwrap.dedent("""
        import numpy as np, volnet as vn
        checks = [
            (vn.ShapeError, lambda: vn.Conv2d(3, 4, 3).forward(np.zeros((1, 2, 5, 5), np.float32))),
            (vn.ShapeError, lambda: vn.Conv2d(3, 4, 3).forward(np.zeros((3, 5, 5), np.float32))),
            (vn.DTypeError, lambda: vn.ReLU().forward(np.zeros((1, 2), np.int64))),
            (vn.NonFiniteError, lambda: vn.ReLU().forward(np.array([[np.nan]]))),
            (vn.ShapeError, lambda: vn.MaxPool2d(3).forward(np.zeros((1, 1, 2, 2)))),
            (vn.StateError, lambda: vn.Linear(2, 2).backward(np.zeros((1, 2)))),
            (vn.ConfigError, lambda: vn.Conv2d(3, 4, 3, stride=0)),
            (vn.ConfigError, lambda: vn.Dropout(1.0)),
            (vn.StateDictError, lambda: vn.Linear(2, 2).load_state_dict({})),
        ]
        for cls, call in checks:
            try:
                call()
            except cls:
                continue
            raise SystemExit(f"no {cls.__name__}")
        print("ok", __debug__)
    """)
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    run = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, env=env, check=False,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ok", "False"]          # __debug__ is False: asserts were stripped
