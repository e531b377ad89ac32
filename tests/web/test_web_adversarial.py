"""Issue 13, demo cases: activation bombs, deep JSON, Origin ports, concurrent network changes."""

import concurrent.futures

import pytest

from volnet.errors import BudgetError, ConfigError
from volnet.web.netspec import parse_net, training_bytes
from volnet.web.session import DemoSession, Settings

# The review's layer list: 73k parameters, over 12 GB of activations at batch 512.
ACTIVATION_BOMB = ", ".join(["conv 64 1 pad4"] * 13 + ["pool 9 stride 4"] * 2 + ["fc 10"])
# Cheap to evaluate, but 13 activation layers kept for backward: heavy only when training.
MANY_ACTIVATIONS = ", ".join(["conv 8 3 pad1"] + ["relu", "tanh"] * 6 + ["relu", "pool 2", "fc 10"])


def test_activation_bomb_layer_list_is_refused(post):
    net = parse_net(ACTIVATION_BOMB, batch_size=1, max_bytes=2 ** 50)
    assert net.num_params() < 80_000
    assert training_bytes(net, (1, 28, 28), 512) > 12e9
    with pytest.raises(ConfigError) as info:
        parse_net(ACTIVATION_BOMB, batch_size=512)
    assert isinstance(info.value, BudgetError) and "VOLNET_MAX_BYTES" in str(info.value)
    response = post("/api/net", {"model": "custom", "layers": ACTIVATION_BOMB})
    assert response.status_code == 400 and "budget" in response.json()["error"]


def test_training_memory_is_checked_at_the_chosen_batch_size(sample):
    session = DemoSession(sample, Settings(), max_bytes="100M")
    try:
        session.select("custom", MANY_ACTIVATIONS)   # fits at batch 32
        with pytest.raises(ConfigError, match="at batch size 512"):
            session.start({"batch_size": 512})
        assert session.state == "idle" and session.settings.batch_size == 32
    finally:
        session.close()


def test_7000_deep_json_body_is_a_400(client, token):
    body = "[" * 7000 + "]" * 7000
    response = client.post("/api/net", content=body, headers={
        "X-Volnet-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "nests 7000 levels deep" in response.json()["error"]
    body = '{"model": "lenet5", "x": ' + "{\"a\": " * 150 + "1" + "}" * 150 + "}"
    response = client.post("/api/train", content=body, headers={
        "X-Volnet-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 400


@pytest.mark.parametrize("origin", ["http://127.0.0.1:9999", "http://127.0.0.1",
                                    "https://127.0.0.1:8000", "http://localhost:8000",
                                    "http://127.0.0.1:8000/x", "null", "http://127.0.0.1:80000"])
def test_origin_must_match_scheme_host_and_port(post, origin):
    response = post("/api/net", {"model": "lenet5"}, headers={"Origin": origin})
    assert response.status_code == 403 and "cross-origin" in response.json()["error"]


def test_same_origin_with_port_is_accepted(post):
    assert post("/api/net", {"model": "lenet5"},
                headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200


def test_100_concurrent_network_changes_all_succeed(post):
    models = ["lenet5", "cifar_example"] * 50
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda m: post("/api/net", {"model": m}), models))
    assert [r.status_code for r in responses] == [200] * 100
    for r in responses:   # each reply describes one network consistently
        payload = r.json()
        assert payload["input_shape"] == ([1, 28, 28] if payload["model"] == "lenet5"
                                          else [1, 32, 32])
