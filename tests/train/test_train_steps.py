"""The Trainer's plug-in points: a custom train_step, OptimizerGroup, per-step LinearDecay."""

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.data.batches import BatchIterator
from volnet.errors import ConfigError, StateDictError
from volnet.train import Adam, LinearDecay, OptimizerGroup, SegmentationStep, Trainer
from volnet.train.optim import SGD


class CountingStep:
    """Half of an update: forward and backward of a squared error, the update by the trainer."""

    metrics = ("loss", "half")

    def __init__(self):
        self.calls = 0

    def __call__(self, trainer, xb, yb):
        self.calls += 1
        out = trainer.net.forward(xb, training=True)
        loss = float((out ** 2).mean())
        trainer.check_loss(loss, xb)
        trainer.net.backward(2 * out / out.size, input_grad=False)
        trainer.apply_gradients()
        return {"loss": loss, "half": 0.5}

    def validate(self, trainer, val):
        return {"val_calls": float(self.calls)}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_a_custom_step_drives_the_loop_its_metrics_are_epoch_means():
    net = vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0))
    x = np.random.default_rng(0).random((10, 1, 2, 2)).astype(np.float32)
    step = CountingStep()
    trainer = Trainer(net, SGD(lr=0.1), train_step=step, progress=False)
    history = trainer.fit(BatchIterator(x, np.zeros(10, int), 4), epochs=2, val=(x, np.zeros(10, int)))
    assert step.calls == 6 and trainer.step == 6                 # 3 batches (4, 4, 2) x 2
    assert history["half"] == [0.5, 0.5] and history["val_calls"] == [3.0, 6.0]
    assert trainer.state_dict()["train_step"] == {"calls": 6}


def test_optimizer_group_steps_each_part_with_its_own_adam_like_pytorch():
    rng = np.random.default_rng(1)
    params = {"g.w": rng.normal(size=3), "d.w": rng.normal(size=3)}
    grads = {"g.w": rng.normal(size=3), "d.w": rng.normal(size=3)}
    group = OptimizerGroup({"g": Adam(lr=0.1, betas=(0.5, 0.999)), "d": Adam(lr=0.01)})
    ref = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opts = {"g": torch.optim.Adam([ref["g.w"]], lr=0.1, betas=(0.5, 0.999)),
            "d": torch.optim.Adam([ref["d.w"]], lr=0.01)}
    for part in ("d", "g", "d"):               # D twice, G once
        name = f"{part}.w"
        group.step({name: params[name]}, {name: grads[name]})
        ref[name].grad = torch.tensor(grads[name])
        opts[part].step()
    for name, value in params.items():
        np.testing.assert_allclose(value, ref[name].detach().numpy(), rtol=1e-12)
    assert (group.members["d"].t, group.members["g"].t) == (2, 1)
    state = group.state_dict()
    other = OptimizerGroup({"g": Adam(lr=1.0), "d": Adam(lr=1.0)})
    other.load_state_dict(state)
    assert other.members["g"].lr == 0.1 and other.members["d"].t == 2
    np.testing.assert_array_equal(other.state["g.w"]["exp_avg"], group.state["g.w"]["exp_avg"])


def test_optimizer_group_refuses_what_it_cannot_place():
    with pytest.raises(ConfigError, match="lies inside"):
        OptimizerGroup({"a": SGD(lr=1.0), "a.b": SGD(lr=1.0)})
    group = OptimizerGroup({"a": SGD(lr=1.0)})
    with pytest.raises(ConfigError, match="belongs to none"):
        group.step({"b.w": np.ones(1)}, {"b.w": np.ones(1)})
    with pytest.raises(StateDictError, match="parts"):
        group.load_state_dict({"type": "OptimizerGroup", "hyper": {"z": {}}, "t": {"z": 0},
                               "state": {}})
    with pytest.raises(StateDictError, match="not an OptimizerGroup"):
        group.load_state_dict(SGD(lr=1.0).state_dict())


def test_linear_decay_is_stepped_per_update_and_extends_on_resume():
    net = vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0))
    x = np.random.default_rng(0).random((8, 1, 2, 2)).astype(np.float32)
    opt = SGD(lr=1.0)
    trainer = Trainer(net, opt, train_step=CountingStep(), schedule=LinearDecay(opt, 8),
                      progress=False)
    lrs = []
    trainer.callbacks.append(vn.train.LambdaCallback(on_batch_end=lambda t, logs: lrs.append(t.optimizer.lr)))
    trainer.fit(BatchIterator(x, np.zeros(8, int), 2), epochs=2)
    # after update s (1..8): 1 while s < 4, then (8 - s) / 4
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    longer = LinearDecay(SGD(lr=1.0), 16)
    longer.load_state_dict(trainer.schedule.state_dict())        # 8 updates done, horizon 16
    assert longer.optimizer.lr == 1.0 and longer.step() == pytest.approx(7 / 8)


def test_segmentation_step_counts_only_labelled_pixels():
    conv = vn.Conv2d(1, 2, 1, rng=0)
    conv.params["weight"][...] = np.array([-1.0, 1.0]).reshape(2, 1, 1, 1)
    conv.params["bias"][...] = 0.0
    net = vn.Sequential(conv)
    x = np.array([[[[1.0, -1.0], [1.0, -1.0]]]], dtype=np.float32)   # predicts 1, 0, 1, 0
    y = np.array([[[1, 1], [255, 0]]])                                # right, wrong, -, right
    trainer = Trainer(net, SGD(lr=1e-9), train_step=SegmentationStep(2), progress=False)
    logs = trainer.train_step(trainer, x, y)
    assert logs["pixel_accuracy"] == pytest.approx(2 / 3)
    val = trainer.train_step.validate(trainer, (x, y))
    assert val["val_mean_iou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


@pytest.mark.parametrize("weighted", [False, True])
def test_segmentation_micro_batches_give_the_whole_batch_gradient(weighted):
    """accumulate=3: micro-batches weighted by their labelled pixels' class weights sum to
    the gradient of the whole batch (float64, so equality up to rounding)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 1, 6, 6))
    y = rng.integers(0, 3, (7, 6, 6))
    y[rng.random((7, 6, 6)) < 0.4] = 255
    weight = [0.5, 2.0, 1.0] if weighted else None
    grads = []
    for k in (1, 3):
        net = vn.Sequential(vn.Conv2d(1, 3, 3, padding=1, rng=0)).astype("float64")
        trainer = Trainer(net, SGD(lr=1e-12), train_step=SegmentationStep(3, weight=weight),
                          accumulate=k, progress=False)
        logs = trainer.train_step(trainer, x, y)
        grads.append((logs["loss"], {n: g.copy() for n, _, g in net.named_params()}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    for name, g in grads[0][1].items():
        np.testing.assert_allclose(grads[1][1][name], g, rtol=1e-10, atol=1e-14, err_msg=name)


def test_steps_that_cannot_split_a_batch_refuse_accumulate():
    from volnet.train import generative as gen

    with pytest.raises(ConfigError, match="does not split batches"):
        gen.make_trainer("dcgan", gen.build("dcgan"), 0, 10, accumulate=2)
