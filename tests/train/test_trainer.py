"""The Trainer: resume equality, divergence, hooks, callbacks, stop/pause, checkpoints."""

import os
import threading

import numpy as np
import pytest

import volnet as vn
from volnet.data import BatchIterator
from volnet.errors import NonFiniteError, TrainingDivergedError
from volnet.io.checkpoint import load_checkpoint, resume, save
from volnet.train import (
    SGD,
    Adam,
    CosineLR,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    Trainer,
    evaluate,
)


def small_net():
    return vn.Sequential(vn.Conv2d(1, 4, 3, padding=1, rng=0), vn.BatchNorm2d(4), vn.ReLU(),
                         vn.MaxPool2d(2), vn.Flatten(), vn.Dropout(0.3, rng=1),
                         vn.Linear(4 * 4 * 4, 3, rng=2))


def toy_data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, 1, 8, 8)).astype(np.uint8)
    x[np.arange(n), 0, y * 2 + 1, :] += 150          # a learnable row per class
    return x, y


def make_trainer(callbacks=(), **kw):
    net = small_net()
    opt = Adam(lr=0.01)
    return Trainer(net, opt, schedule=CosineLR(opt, 4), callbacks=callbacks, progress=False, **kw)


def batches_for(x, y):
    return BatchIterator(x, y, 16, seed=5, mean=0.3, std=0.3, crop_padding=1, flip=True)


def metrics(history):
    """History without the wall-clock entries."""
    return {k: v for k, v in history.items() if k not in ("time", "images_per_s")}


def params_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(sa[k], sb[k]) for k in sa)


def test_resume_from_epoch_checkpoint_is_bit_identical(tmp_path):
    x, y = toy_data()
    full = make_trainer()
    full.fit(batches_for(x, y), 4)
    part = make_trainer()
    part.fit(batches_for(x, y), 2)
    save(tmp_path / "e2.safetensors", part.net, trainer=part)
    again = make_trainer()
    resume(again, tmp_path / "e2.safetensors")
    again.fit(batches_for(x, y), 4)
    assert params_equal(full.net, again.net)
    assert metrics(full.history) == metrics(again.history) and again.step == full.step
    for name, slots in full.optimizer.state.items():
        for slot, value in slots.items():
            assert np.array_equal(value, again.optimizer.state[name][slot])
    assert (full.net[5].rng.bit_generator.state == again.net[5].rng.bit_generator.state)


def test_resume_mid_epoch_is_bit_identical(tmp_path):
    x, y = toy_data()
    path = tmp_path / "mid.safetensors"
    full = make_trainer()
    full.fit(batches_for(x, y), 3)
    part = make_trainer(callbacks=[LambdaCallback(
        on_batch_end=lambda t, logs: t.stop() if t.step == 9 else None)])
    part.fit(batches_for(x, y), 3)                 # stops inside epoch 2 (6 batches per epoch)
    assert part.epoch == 1 and part.batch == 3
    save(path, part.net, trainer=part)
    again = make_trainer()
    resume(again, path)
    again.fit(batches_for(x, y), 3)
    assert params_equal(full.net, again.net) and metrics(full.history) == metrics(again.history)


def test_nan_loss_raises_with_context_and_keeps_weights():
    x, y = toy_data()
    trainer = make_trainer()
    trainer.fit(batches_for(x, y), 1)
    before = trainer.net.state_dict()
    trainer.net[6].params["bias"][0] = np.inf           # scores become inf -> non-finite loss
    before["6.bias"] = trainer.net[6].params["bias"].copy()
    with pytest.raises(TrainingDivergedError) as err:
        trainer.fit(batches_for(x, y), 2)
    text = str(err.value)
    assert "step 7" in text and "epoch 2" in text and "last finite loss" in text
    assert "parameter 6.bias holds NaN/inf" in text
    after = trainer.net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before if "running" not in k
               and "num_batches" not in k)


def test_nonfinite_gradient_norm_detected_before_update():
    x, y = toy_data()

    def poison(named_grads):
        named_grads[0][1][...] = np.nan

    trainer = make_trainer(grad_hook=poison)
    w0 = trainer.net[0].params["weight"].copy()
    with pytest.raises(TrainingDivergedError, match="gradient norm"):
        trainer.fit(batches_for(x, y), 1)
    assert np.array_equal(trainer.net[0].params["weight"], w0) and trainer.step == 0


def test_grad_hook_sees_every_trainable_gradient_and_can_change_it():
    x, y = toy_data()
    seen = []

    def zero(named_grads):
        seen.append([n for n, _ in named_grads])
        for _, g in named_grads:
            g[...] = 0.0

    trainer = Trainer(small_net(), SGD(lr=0.1), grad_hook=zero, progress=False)
    w0 = trainer.net.state_dict()
    trainer.fit(batches_for(x, y), 1)
    names = [n for n, _, _ in trainer.net.named_params(trainable_only=True)]
    assert seen[0] == names and len(seen) == 6
    w1 = trainer.net.state_dict()
    assert all(np.array_equal(w0[k], w1[k]) for k in names)   # zeroed grads: SGD leaves params


def test_nonfinite_state_is_never_checkpointed(tmp_path):
    x, y = toy_data()
    path = tmp_path / "good.safetensors"
    trainer = make_trainer(callbacks=[ModelCheckpoint(path)])
    trainer.fit(batches_for(x, y), 1)
    good = path.read_bytes()
    trainer.net[0].params["weight"][0] = np.nan
    with pytest.raises(NonFiniteError):
        save(path, trainer.net, trainer=trainer)
    assert path.read_bytes() == good


def test_best_checkpoint_and_early_stopping(tmp_path):
    x, y = toy_data()
    xv = batches_for(x, y).transform(x)
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", save_best_only=True)
    stopper = EarlyStopping("val_loss", patience=0, min_delta=10.0)   # never improves by 10
    trainer = make_trainer(callbacks=[best, stopper])
    trainer.fit(batches_for(x, y), 4, val=(xv, y))
    assert trainer.epoch == 2 and stopper.stopped_epoch == 2
    assert best.saved >= 1
    ckpt = load_checkpoint(tmp_path / "best.safetensors")
    assert ckpt.trainer_state["history"]["val_accuracy"][-1] == best.best


def test_training_learns_and_is_reproducible():
    x, y = toy_data(240)
    xv, yv = toy_data(90, seed=1)
    runs = []
    for _ in range(2):
        trainer = make_trainer()
        trainer.fit(batches_for(x, y), 4, val=(batches_for(x, y).transform(xv), yv))
        runs.append(trainer)
    assert metrics(runs[0].history) == metrics(runs[1].history)
    assert runs[0].history["val_accuracy"][-1] > 0.9          # chance is 1/3


def test_stop_and_pause_from_another_thread():
    x, y = toy_data()
    gate, paused_at = threading.Event(), []

    def on_batch_end(trainer, logs):
        if logs["step"] == 2 and not paused_at:
            trainer.pause()
            paused_at.append(trainer.step)
            gate.set()

    trainer = make_trainer(callbacks=[LambdaCallback(on_batch_end=on_batch_end)])
    worker = threading.Thread(target=trainer.fit, args=(batches_for(x, y), 50))
    worker.start()
    assert gate.wait(30)
    worker.join(0.3)
    assert worker.is_alive() and trainer.step == 2          # held between batches
    trainer.stop()
    worker.join(30)
    assert not worker.is_alive() and trainer.step == 2 and trainer.stopped


def test_batch_and_epoch_logs_carry_the_documented_keys():
    x, y = toy_data()
    batch_logs, epoch_logs = [], []
    cb = LambdaCallback(on_batch_end=lambda t, l: batch_logs.append(l),
                        on_epoch_end=lambda t, l: epoch_logs.append(l))
    trainer = make_trainer(callbacks=[cb])
    trainer.fit(batches_for(x, y), 1, val=(batches_for(x, y).transform(x), y))
    assert {"epoch", "batch", "step", "loss", "accuracy", "images_per_s", "lr"} <= set(batch_logs[0])
    assert {"val_loss", "val_accuracy", "time", "images_per_s"} <= set(epoch_logs[0])
    assert [l["step"] for l in batch_logs] == list(range(1, 7))


def test_non_main_rank_writes_no_checkpoint(tmp_path):
    x, y = toy_data()
    trainer = make_trainer(callbacks=[ModelCheckpoint(tmp_path / "c.safetensors")], is_main=False)
    trainer.fit(batches_for(x, y), 1)
    assert not os.listdir(tmp_path)


def test_evaluate_counts_correct_predictions():
    net = vn.Sequential(vn.Flatten(), vn.Linear(2, 2, rng=0))
    net[1].params["weight"][...] = np.eye(2)
    x = np.array([[[[1.0, 0.0]]], [[[0.0, 1.0]]], [[[2.0, 0.0]]]], dtype=np.float32)
    result = evaluate(net, x, np.array([0, 1, 1]))
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["predictions"].tolist() == [0, 1, 0]


def test_divergence_factor_stops_a_run_with_a_huge_learning_rate():
    from volnet.data import load_mnist_sample
    from volnet.models import lenet5

    data = load_mnist_sample()
    batches = BatchIterator(data.x_train[:640], data.y_train[:640], 32, mean=data.mean, std=data.std)
    trainer = Trainer(lenet5(), SGD(lr=10.0), progress=False, divergence_factor=5.0)
    with pytest.raises(TrainingDivergedError, match="exceeds 5.0 x the first loss|loss became"):
        trainer.fit(batches, 1)
    assert trainer.step < 20


def test_validation_as_pair_list_or_batch_iterator_agree():
    x, y = toy_data()
    plain = BatchIterator(x, y, 16, shuffle=False, mean=0.3, std=0.3)
    xv = plain.transform(x)
    results = []
    for val in ((xv, y), [xv, y], plain):
        trainer = make_trainer()
        trainer.fit(batches_for(x, y), 1, val=val)
        results.append((trainer.history["val_loss"][-1], trainer.history["val_accuracy"][-1]))
    assert results[0] == results[1]
    assert results[0][1] == results[2][1] and results[0][0] == pytest.approx(results[2][0])


def test_divergence_names_the_first_layer_with_a_non_finite_output():
    x, y = toy_data()
    trainer = make_trainer()
    trainer.net[0].params["weight"][...] = 1e38       # finite weights, overflowing activations
    with pytest.raises(TrainingDivergedError, match="first non-finite output: layer 0, Conv2d"):
        trainer.fit(batches_for(x, y), 1)
