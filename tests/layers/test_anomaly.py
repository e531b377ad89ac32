"""Anomaly mode names the first layer and pass that produced a NaN/inf (issue 24).

The reference is hand-computed: each network below is built so that exactly one layer is
the first to go non-finite, in a known pass and a known place.
"""

import threading

import numpy as np
import pytest

import volnet as vn
from volnet.cli import main
from volnet.data.batches import BatchIterator
from volnet.errors import NonFiniteError, TrainingDivergedError


def nested_net():
    """Conv -> ReLU -> [Flatten -> Linear -> (Linear)]: the innermost Linear gets an inf weight."""
    inner = vn.Sequential(vn.Linear(8, 3, rng=2))
    net = vn.Sequential(vn.Conv2d(1, 2, 3, padding=1, rng=0), vn.ReLU(),
                        vn.Sequential(vn.Flatten(), vn.Linear(2 * 2 * 2, 8, rng=1), inner))
    inner[0].params["weight"][1, 4] = np.inf
    return net


X = np.random.default_rng(0).standard_normal((2, 1, 2, 2)).astype(np.float32)


def test_forward_names_the_first_leaf_not_its_containers():
    net = nested_net()
    with pytest.raises(NonFiniteError) as err, vn.detect_anomaly(), np.errstate(invalid="ignore"):
        net.forward(X)
    message = str(err.value)
    assert "forward pass of Linear(in_features=8, out_features=3" in message
    assert "at 2.2.0" in message and "from a finite input" in message
    assert "of 6 values in its output" in message   # 2 examples x 3 outputs


def test_without_anomaly_mode_the_same_net_runs_silently():
    out = nested_net().forward(X)
    assert not np.isfinite(out).all()


def test_backward_names_the_layer_whose_input_gradient_overflows():
    # forward: 1e-30 * 1e30 * 2 = 2 (finite); backward: 1e30 * 1e30 overflows float32 at layer 0
    first, second = vn.Linear(2, 2, bias=False), vn.Linear(2, 1, bias=False)
    first.params["weight"][:] = 1e30
    second.params["weight"][:] = 1e30
    net = vn.Sequential(first, second)
    x = np.full((1, 2), 1e-30, np.float32)
    with vn.detect_anomaly(), np.errstate(over="ignore"):
        out = net.forward(x, training=True)
        assert np.isfinite(out).all()
        with pytest.raises(NonFiniteError) as err:
            net.backward(np.ones_like(out))
    message = str(err.value)
    assert "backward pass of Linear(in_features=2, out_features=2" in message and "at 0" in message
    assert "its input gradient" in message and "from a finite output gradient" in message
    assert np.isfinite(second.grads["weight"]).all()   # the later layer was fine


def test_parameter_gradient_is_checked_too():
    layer = vn.Linear(2, 1, bias=False, rng=0)
    x = np.full((1, 2), 3e38, np.float32)
    layer.params["weight"][:] = 1e-38          # forward 3e38 * 1e-38 * 2: finite
    with vn.detect_anomaly(), np.errstate(over="ignore"):
        out = layer.forward(x, training=True)
        with pytest.raises(NonFiniteError, match="gradient of its parameter 'weight'"):
            layer.backward(np.full_like(out, 10.0), input_grad=False)   # 10 * 3e38 overflows


def test_trainer_stop_points_to_anomaly_mode_and_anomaly_mode_names_the_layer():
    def make():
        net = vn.Sequential(vn.Flatten(), vn.Linear(4, 5, rng=0), vn.ReLU(), vn.Linear(5, 3, rng=1))
        net[3].params["weight"][0, 0] = np.inf
        return vn.Trainer(net, vn.SGD(lr=0.1), progress=False)
    x = np.random.default_rng(1).standard_normal((8, 1, 2, 2)).astype(np.float32)
    y = np.arange(8) % 3
    with pytest.raises(TrainingDivergedError, match="--detect-anomaly"):
        make().fit(BatchIterator(x, y, 4), epochs=1)
    with vn.detect_anomaly(), pytest.raises(NonFiniteError, match="forward pass of Linear.* at 3"):
        make().fit(BatchIterator(x, y, 4), epochs=1)


def test_anomaly_mode_is_per_thread_and_ends_with_the_block():
    net = nested_net()
    seen = []
    with vn.detect_anomaly():
        worker = threading.Thread(target=lambda: seen.append(net.forward(X)))
        worker.start()
        worker.join()
    assert len(seen) == 1 and not np.isfinite(seen[0]).all()   # the other thread ran unchecked
    assert not np.isfinite(net.forward(X)).all()               # and after the block, no checks


def test_volnet_train_detect_anomaly_names_the_layer(tmp_path, capsys):
    out = tmp_path / "c.safetensors"
    code = main(["train", "lenet5", "--lr", "1e9", "--epochs", "1", "--quiet",
                 "--detect-anomaly", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "anomaly mode: the forward pass of" in err and "Traceback" not in err
