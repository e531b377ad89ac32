"""The exception hierarchy: one base class, each error also the builtin a caller catches,
exported at the top level, and used (not bare builtins) by the engine's checks."""

import numpy as np
import pytest

import volnet as vn
from volnet import errors

BUILTIN = {
    "ShapeError": ValueError, "DTypeError": TypeError, "ConfigError": ValueError,
    "NonFiniteError": ValueError, "StateError": RuntimeError, "StateDictError": ValueError,
    "CheckpointError": ValueError, "DataError": ValueError, "TrainingDivergedError": RuntimeError,
    "BudgetError": ValueError,
}


@pytest.mark.parametrize("name, builtin", BUILTIN.items())
def test_each_error_is_a_volnet_error_and_its_builtin(name, builtin):
    cls = getattr(errors, name)
    assert getattr(vn, name) is cls
    assert issubclass(cls, vn.VolnetError) and issubclass(cls, builtin)
    with pytest.raises(builtin, match="boom"):
        raise cls("boom")


def test_every_error_class_in_the_module_is_covered():
    classes = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert classes == set(BUILTIN) | {"VolnetError"}


def test_backward_out_of_order_is_also_a_value_error():
    """StateError subclasses both RuntimeError and ValueError: either ``except`` catches it."""
    assert issubclass(vn.StateError, ValueError)


@pytest.mark.parametrize("call, cls", [
    (lambda: vn.Conv2d(3, 4, 3).forward(np.zeros((1, 3, 2, 2), np.float32)), vn.ShapeError),
    (lambda: vn.Linear(2, 2).forward(np.zeros((1, 2), np.int8)), vn.DTypeError),
    (lambda: vn.Tanh().forward(np.array([[np.inf]])), vn.NonFiniteError),
    (lambda: vn.Linear(2, 2).backward(np.zeros((1, 2), np.float32)), vn.StateError),
    (lambda: vn.Linear(2, 2).load_state_dict({"weight": np.zeros((2, 2))}), vn.StateDictError),
    (lambda: vn.Linear(2, 2).predict(np.zeros((1, 2), np.float32), batch_size=0), vn.ConfigError),
    (lambda: vn.softmax_cross_entropy(np.zeros((1, 2)), np.array([2])), vn.ShapeError),
])
def test_engine_raises_library_errors(call, cls):
    with pytest.raises(cls) as info:
        call()
    assert isinstance(info.value, vn.VolnetError)
