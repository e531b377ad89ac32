"""Every update rule against torch.optim, step by step, in float64."""

import numpy as np
import pytest
import torch

from volnet.errors import ConfigError, StateDictError
from volnet.train.optim import SGD, Adagrad, Adam, RMSProp, make_optimizer

CASES = [  # (volnet factory, torch factory) with the same hyperparameters
    (lambda: SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda: SGD(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda: SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-2)),
    (lambda: Adam(lr=1e-2), lambda p: torch.optim.Adam(p, lr=1e-2)),
    (lambda: Adam(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    (lambda: RMSProp(lr=1e-2, alpha=0.9), lambda p: torch.optim.RMSprop(p, lr=1e-2, alpha=0.9)),
    (lambda: RMSProp(lr=1e-3, weight_decay=0.05),
     lambda p: torch.optim.RMSprop(p, lr=1e-3, weight_decay=0.05)),
    (lambda: Adagrad(lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1)),
    (lambda: Adagrad(lr=0.05, weight_decay=0.01),
     lambda p: torch.optim.Adagrad(p, lr=0.05, weight_decay=0.01)),
]


@pytest.mark.parametrize("ours, theirs", CASES)
def test_matches_torch_step_by_step(ours, theirs, rng):
    shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "fc.weight": (5, 7)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt, topt = ours(), theirs(list(tparams.values()))
    for _ in range(6):
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        topt.step()
        opt.step(params, grads)
        for k in shapes:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_state_dict_roundtrip_continues_identically(rng):
    params = {"w": rng.standard_normal(5)}
    grads = [{"w": rng.standard_normal(5)} for _ in range(4)]
    a = Adam(lr=0.01)
    for g in grads[:2]:
        a.step(params, g)
    b = Adam(lr=0.5)                      # hyperparameters come back from the state too
    b.load_state_dict(a.state_dict())
    pa, pb = {"w": params["w"].copy()}, {"w": params["w"].copy()}
    for g in grads[2:]:
        a.step(pa, g)
        b.step(pb, g)
    assert np.array_equal(pa["w"], pb["w"]) and b.lr == 0.01 and b.t == 4


def test_state_of_another_rule_is_refused():
    with pytest.raises(StateDictError, match="Adam"):
        SGD(lr=0.1).load_state_dict(Adam().state_dict())


@pytest.mark.parametrize("make", [lambda: SGD(lr=0), lambda: SGD(lr=0.1, momentum=1.0),
                                  lambda: SGD(lr=0.1, nesterov=True), lambda: Adam(betas=(1.0, 0.9)),
                                  lambda: RMSProp(alpha=1.5), lambda: Adagrad(eps=0),
                                  lambda: make_optimizer("lbfgs", lr=0.1)])
def test_bad_hyperparameters_raise(make):
    with pytest.raises(ConfigError):
        make()


def test_mismatched_gradient_shape_is_named():
    with pytest.raises(ConfigError, match="fc.weight"):
        SGD(lr=0.1).step({"fc.weight": np.zeros((2, 3))}, {"fc.weight": np.zeros((3, 2))})
