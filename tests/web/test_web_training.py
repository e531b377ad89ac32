"""Training through the demo: the shared Trainer's results, live metrics, pause/resume/reset, tabs."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from volnet.data.batches import BatchIterator
from volnet.data.datasets import Dataset
from volnet.models import lenet5
from volnet.train.optim import Adam
from volnet.train.trainer import Trainer
from volnet.web.session import DemoSession, Settings, pad_to

WS_URL = "ws://127.0.0.1:8000"


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_demo_training_is_the_trainer_bit_for_bit(sample):
    """One epoch through the demo gives exactly the weights of Trainer.fit with the same settings."""
    small = Dataset(sample.x_train[:320], sample.y_train[:320], sample.x_test[:100],
                    sample.y_test[:100], sample.class_names, sample.mean, sample.std, "small")
    settings = Settings(lr=2e-3, batch_size=32, epochs=1, eval_every=3, eval_size=50, seed=0)
    session = DemoSession(small, settings)
    session.start()
    wait_for(lambda: session.state == "done", what="the demo run to finish")

    net = lenet5(seed=0)
    batches = BatchIterator(small.x_train, small.y_train, 32, seed=0, mean=small.mean, std=small.std)
    history = Trainer(net, Adam(lr=2e-3), progress=False).fit(batches, epochs=1)
    for (name, ours, _), (_, theirs, _) in zip(session.choice.net.named_params(), net.named_params()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    status = session.status()
    assert status["step"] == 10 and len(status["train"]) == 10
    assert np.mean([p["loss"] for p in status["train"]]) == pytest.approx(history["loss"][0], rel=1e-4)
    # three mid-epoch evaluations on 50 digits, then the epoch's full held-out evaluation
    assert [p["size"] for p in status["held_out"]] == [50, 50, 50, 100]


def drawn_digit_agreement(net, post_png, sample, count=40) -> tuple[int, float]:
    """Held-out digits the net classifies confidently (p > 0.9), drawn large on a 280x280 canvas
    and sent as PNG: (how many such digits, fraction whose prediction matches the original's)."""
    originals = sample.x_test[:count, 0]
    probs = net.predict(((originals[:, None] / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    confident = [i for i in range(count) if probs[i].max() > 0.9]
    agree = 0
    for i in confident:
        canvas = np.zeros((280, 280), np.uint8)
        canvas[20:260, 20:260] = np.asarray(Image.fromarray(originals[i]).resize((240, 240)))
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        agree += post_png(buffer.getvalue()).json()["predicted"] == probs[i].argmax()
    return len(confident), agree / max(len(confident), 1)


def test_live_training_passes_90_percent_then_pause_resume_reset(client, post, post_png, demo, sample):
    assert post("/api/net", {"model": "lenet5"}).status_code == 200
    filters_before = client.get("/api/filters").json()["filters"]
    assert post("/api/train", {"action": "start"}).json()["state"] == "training"
    assert post("/api/train", {"action": "start"}).status_code == 409   # already running
    # malformed requests while training get 4xx and leave the loop running
    assert post("/api/net", {"model": "custom", "layers": "conv"}).status_code == 400
    assert client.get("/api/activations?index=x").status_code == 400
    status = wait_for(lambda: (s := client.get("/api/status").json())["held_out"]
                      and s["held_out"][-1]["acc"] > 0.9 and s, what="held-out accuracy > 90%")
    assert status["state"] == "training" and status["images_per_s"] > 0
    losses = [p["loss"] for p in status["train"]]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    held = [p["acc"] for p in status["held_out"]]
    assert held[-1] > held[0]
    assert client.get("/api/filters").json()["filters"] != filters_before   # the filters learn

    assert post("/api/train", {"action": "pause"}).json()["state"] == "paused"
    def settled():   # the batch in flight (slow on a loaded machine) finishes, then it holds
        before = client.get("/api/status").json()["step"]
        time.sleep(0.5)
        return before == client.get("/api/status").json()["step"] and before
    step = wait_for(settled, timeout=20, what="the paused trainer to hold")
    # the trained net reads digits drawn on the canvas as it reads the originals
    confident, agreement = drawn_digit_agreement(demo.session.view_net, post_png, sample)
    assert confident >= 15 and agreement >= 0.95
    assert client.get("/api/status").json()["step"] == step
    assert post("/api/train", {"action": "resume"}).json()["state"] == "training"
    wait_for(lambda: client.get("/api/status").json()["step"] > step, what="training to go on")

    # several tabs watch the same run
    with client.websocket_connect(f"{WS_URL}/ws?token={demo.token}") as tab1, \
            client.websocket_connect(f"{WS_URL}/ws?token={demo.token}") as tab2:
        first, second = tab1.receive_json(), tab2.receive_json()
    assert first["run"] == second["run"] and first["network"] == second["network"] == "lenet5"
    assert len(first["train"]) > 0 and len(second["train"]) > 0

    status = post("/api/train", {"action": "reset"}).json()
    assert status["state"] == "idle" and status["step"] == 0 and status["train"] == []
    for (name, ours, _), (_, fresh, _) in zip(demo.session.view_net.named_params(),
                                              lenet5(seed=0).named_params()):
        np.testing.assert_array_equal(ours, fresh, err_msg=name)


@pytest.mark.parametrize("model, size", [("lenet5", 28), ("cifar_example", 32)])
def test_views_feed_the_net_what_training_feeds_it(sample, model, size):
    session = DemoSession(sample)
    session.select(model)
    digits = sample.x_test[:8]
    batches = BatchIterator(pad_to(digits, size), sample.y_test[:8], 8, shuffle=False,
                            mean=sample.mean, std=sample.std)
    xb, _ = next(batches.batches(0))
    assert session.inputs(digits).shape == (8, 1, size, size)
    np.testing.assert_allclose(session.inputs(digits), xb, rtol=1e-6, atol=1e-6)
