"""``backward(dout, input_grad=False)``: same parameter gradients, no input gradient.

For every layer and container case: a backward with ``input_grad=False`` returns None and
leaves every parameter gradient equal (bit for bit) to a default backward after the same
forward; the default still returns dx of the input's shape. Also a SideBranch head and
the Trainer step, which uses the flag.
"""

import numpy as np
import pytest
from layer_cases import CASE_IDS, LAYER_CASES, reseed_dropout

import volnet as vn
from volnet.functional.conv import conv2d_backward, conv2d_forward


def _grads(net):
    return {name: g.copy() for name, _, g in net.named_params() if g is not None}


def _run(layer, x, training, dout, **kwargs):
    reseed_dropout(layer)
    layer.forward(x, training=training, cache=True)
    return layer.backward(dout, **kwargs), _grads(layer)


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_param_grads_unchanged_and_dx_none_only_when_asked(case):
    layer, x = case.layer(), case.x()
    reseed_dropout(layer)
    out = layer.forward(x, training=case.training)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dx, full = _run(layer, x, case.training, dout)
    assert dx is not None and dx.shape == x.shape
    none, skipped = _run(layer, x, case.training, dout, input_grad=False)
    assert none is None
    assert skipped.keys() == full.keys()
    for name in full:
        np.testing.assert_array_equal(skipped[name], full[name], err_msg=name)
    again, _ = _run(layer, x, case.training, dout, input_grad=True)
    np.testing.assert_array_equal(again, dx)


def test_conv2d_backward_skips_dx_only_when_asked():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out, cache = conv2d_forward(x, w, np.zeros(4, np.float32), padding=(1, 1))
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx, dw, db = conv2d_backward(dout, cache)
    none, dw2, db2 = conv2d_backward(dout, cache, input_grad=False)
    assert dx.shape == x.shape and none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_side_branch_head_still_trains():
    def build():
        head = vn.Sequential(vn.Flatten(), vn.Linear(3 * 4 * 4, 2, rng=1))
        return vn.Sequential(vn.Conv2d(2, 3, 3, padding=1, rng=0), vn.SideBranch(head),
                             vn.MaxPool2d(2), vn.Flatten(), vn.Linear(3 * 2 * 2, 4, rng=2))

    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    results = []
    for flag in (True, False):
        net = build()
        out = net.forward(x, training=True)
        net[1].grad = np.ones_like(net[1].output)
        dx = net.backward(np.ones_like(out), input_grad=flag)
        assert (dx is None) == (not flag)
        results.append(_grads(net))
    assert results[0].keys() == results[1].keys()
    for name in results[0]:
        np.testing.assert_array_equal(results[1][name], results[0][name], err_msg=name)


def test_trainer_skips_the_input_gradient(monkeypatch):
    from volnet.data import BatchIterator
    from volnet.train.optim import SGD
    from volnet.train.trainer import Trainer

    net = vn.Sequential(vn.Conv2d(1, 2, 3, rng=0), vn.Flatten(), vn.Linear(2 * 2 * 2, 3, rng=1))
    seen = []
    original = vn.Layer.backward

    def spy(self, dout, input_grad=True):
        if self is net:
            seen.append(input_grad)
        return original(self, dout, input_grad)

    monkeypatch.setattr(vn.Layer, "backward", spy)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    Trainer(net, SGD(lr=0.1), progress=False).fit(BatchIterator(x, y, batch_size=4, seed=0), epochs=1)
    assert seen == [False, False]
