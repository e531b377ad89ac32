"""Training through the demo: the shared Trainer's results, live metrics, pause/resume/reset, tabs."""

import time

import numpy as np
import pytest

from volnet.data.batches import BatchIterator
from volnet.data.datasets import Dataset
from volnet.models import lenet5
from volnet.train.optim import Adam
from volnet.train.trainer import Trainer
from volnet.web.session import DemoSession, Settings

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
    small = Dataset(sample.x_train[:640], sample.y_train[:640], sample.x_test[:200],
                    sample.y_test[:200], sample.class_names, sample.mean, sample.std, "small")
    settings = Settings(lr=2e-3, batch_size=32, epochs=1, eval_every=5, eval_size=100, seed=0)
    session = DemoSession(small, settings)
    session.start()
    wait_for(lambda: session.state == "done", what="the demo run to finish")

    net = lenet5(seed=0)
    batches = BatchIterator(small.x_train, small.y_train, 32, seed=0, mean=small.mean, std=small.std)
    history = Trainer(net, Adam(lr=2e-3), progress=False).fit(batches, epochs=1)
    for (name, ours, _), (_, theirs, _) in zip(session.choice.net.named_params(), net.named_params()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    status = session.status()
    assert status["step"] == 20 and len(status["train"]) == 20
    assert np.mean([p["loss"] for p in status["train"]]) == pytest.approx(history["loss"][0], rel=1e-4)
    # four mid-epoch evaluations on 100 digits, then the epoch's full held-out evaluation
    assert [p["size"] for p in status["held_out"]] == [100, 100, 100, 100, 200]


def test_live_training_passes_90_percent_then_pause_resume_reset(client, post, demo):
    assert post("/api/net", {"model": "lenet5"}).status_code == 200
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

    assert post("/api/train", {"action": "pause"}).json()["state"] == "paused"
    def settled():   # the batch in flight (slow on a loaded machine) finishes, then it holds
        before = client.get("/api/status").json()["step"]
        time.sleep(0.5)
        return before == client.get("/api/status").json()["step"] and before
    step = wait_for(settled, timeout=20, what="the paused trainer to hold")
    time.sleep(1.0)
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


def test_trained_net_reads_a_drawn_digit_like_the_original(client, post_png, demo, sample):
    """A held-out digit drawn large on a 280x280 canvas gets the class the net gives the original."""
    import io

    from PIL import Image

    part = Dataset(sample.x_train[:3000], sample.y_train[:3000], sample.x_test[:100],
                   sample.y_test[:100], sample.class_names, sample.mean, sample.std, "part")
    session = DemoSession(part, Settings(epochs=1, eval_every=1000))
    session.start()
    wait_for(lambda: session.state == "done", timeout=120, what="one epoch")
    demo.session.view_net.load_state_dict(session.view_net.state_dict())
    originals = sample.x_test[:20, 0]
    direct = demo.session.view_net.forward(
        ((originals[:, None] / 255.0 - 0.1307) / 0.3081).astype(np.float32)).argmax(axis=1)
    agree = 0
    for digit, expected in zip(originals, direct):
        canvas = np.zeros((280, 280), np.uint8)
        canvas[20:260, 20:260] = np.asarray(Image.fromarray(digit).resize((240, 240)))
        buffer = io.BytesIO()
        Image.fromarray(canvas).save(buffer, format="PNG")
        agree += post_png(buffer.getvalue()).json()["predicted"] == expected
    assert agree >= 18
