"""Issue 15, item 1: the optimizer API a new user types cannot silently do nothing."""

import numpy as np
import pytest

import volnet as vn
from volnet.errors import ConfigError, StateError


def _net():
    return vn.Sequential(vn.Conv2d(1, 2, 3, rng=0), vn.ReLU(), vn.Flatten(),
                         vn.Linear(2 * 4 * 4, 3, rng=1))


def _batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 1, 6, 6)).astype(np.float32), np.arange(6) % 3


def _loss_and_backward(net, x, y):
    loss, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), y)
    net.backward(dscores)
    return loss


@pytest.mark.parametrize("bind", [lambda net: net, lambda net: net.parameters()],
                         ids=["network", "parameters"])
def test_item1_step_updates_every_layer_like_the_explicit_form(bind):
    x, y = _batch()
    net, reference = _net(), _net()
    opt = vn.SGD(bind(net), lr=0.1, momentum=0.9)
    explicit = vn.SGD(lr=0.1, momentum=0.9)
    for _ in range(3):
        for model in (net, reference):
            _loss_and_backward(model, x, y)
        opt.step()
        named = list(reference.named_params(trainable_only=True))
        explicit.step({n: p for n, p, _ in named}, {n: g for n, _, g in named})
    for (name, ours, _), (_, theirs, _) in zip(net.named_params(), reference.named_params()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert opt.state_dict()["state"].keys() == explicit.state_dict()["state"].keys()


def test_item1_the_loss_falls_with_the_obvious_loop():
    x, y = _batch()
    net = _net()
    opt = vn.Adam(net, lr=1e-2)
    losses = []
    for _ in range(20):
        losses.append(_loss_and_backward(net, x, y))
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


def test_item1_container_params_are_not_an_empty_trap():
    x, y = _batch()
    net = _net()
    _loss_and_backward(net, x, y)
    with pytest.raises(ConfigError, match=r"vn\.SGD\(net, lr="):
        vn.SGD(lr=0.1).step(net.params, net.grads)
    with pytest.raises(KeyError, match="named_params"):
        net.params["0.weight"]
    with pytest.raises(ConfigError, match="container"):
        net.params["weight"] = np.zeros(3)
    assert "named_params" in repr(net.params)
    # the old explicit form still works, and walks over layers still see no container arrays
    assert sum(len(layer.params) for _, layer in net.named_layers()) == 4
    assert len(net.state_dict()) == 4 and net.copy().num_params() == net.num_params()


def test_item1_misuse_is_refused_with_the_right_call():
    net = _net()
    with pytest.raises(ConfigError, match=r"vn\.SGD\(net, lr=0\.1\)"):
        vn.SGD(0.1)
    with pytest.raises(ConfigError, match="not from a params dict"):
        vn.SGD(net[0].params, lr=0.1)
    with pytest.raises(ConfigError, match=r"SGD\(net, lr=0\.1\)"):
        vn.SGD(lr=0.1).step()
    with pytest.raises(StateError, match="backward"):
        vn.SGD(net, lr=0.1).step()      # no backward yet: no gradient
    x, y = _batch()
    _loss_and_backward(net, x, y)
    opt = vn.SGD(net, lr=0.1)
    opt.zero_grad()
    with pytest.raises(StateError, match="backward"):
        opt.step()


def test_item1_frozen_parameters_and_replaced_heads_are_followed():
    x, y = _batch()
    net = _net()
    opt = vn.SGD(net, lr=0.1)
    net.freeze("0.*")
    net[3] = vn.Linear(2 * 4 * 4, 3, rng=5)            # a new head after the optimizer was built
    conv, head = net[0].params["weight"].copy(), net[3].params["weight"].copy()
    _loss_and_backward(net, x, y)
    opt.step()
    np.testing.assert_array_equal(net[0].params["weight"], conv)
    assert not np.array_equal(net[3].params["weight"], head)
    net.freeze()
    with pytest.raises(ConfigError, match="frozen"):
        opt.step()
