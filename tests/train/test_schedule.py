"""Learning-rate schedules against torch.optim.lr_scheduler."""

import pytest
import torch

from volnet.train.optim import SGD
from volnet.train.schedule import CosineLR, ReduceLROnPlateau, StepLR


def _torch_opt(lr):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_step_lr_matches_torch():
    opt, topt = SGD(lr=0.1), _torch_opt(0.1)
    ours, theirs = StepLR(opt, step_size=3, gamma=0.5), torch.optim.lr_scheduler.StepLR(topt, 3, 0.5)
    for _ in range(10):
        topt.step()
        theirs.step()
        assert ours.step() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-15)


def test_cosine_matches_torch():
    opt, topt = SGD(lr=0.1), _torch_opt(0.1)
    ours = CosineLR(opt, t_max=7, eta_min=1e-3)
    theirs = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=7, eta_min=1e-3)
    for _ in range(7):
        topt.step()
        theirs.step()
        assert ours.step() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("mode, cooldown", [("min", 0), ("max", 1)])
def test_plateau_matches_torch(mode, cooldown):
    metrics = [1.0, 0.9, 0.9, 0.91, 0.95, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7]
    opt, topt = SGD(lr=1.0), _torch_opt(1.0)
    ours = ReduceLROnPlateau(opt, mode=mode, factor=0.5, patience=1, cooldown=cooldown)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode=mode, factor=0.5, patience=1,
                                                        cooldown=cooldown)
    for m in metrics:
        theirs.step(m)
        assert ours.step(m) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-15)


def test_schedule_state_roundtrip():
    a = ReduceLROnPlateau(SGD(lr=1.0), patience=0)
    for m in (1.0, 1.0):
        a.step(m)
    opt = SGD(lr=1.0)
    opt.load_state_dict(a.optimizer.state_dict())   # a resume restores both
    b = ReduceLROnPlateau(opt, patience=0)
    b.load_state_dict(a.state_dict())
    assert b.step(1.0) == a.step(1.0) == pytest.approx(0.01)
