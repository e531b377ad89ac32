"""Fuzz of the demo's JSON endpoints: every mutated body gets a 2xx or a 4xx, never a 5xx,
and the request's tracemalloc peak stays under the session's memory budget."""

import json
import re
import warnings

import pytest
from hypothesis import strategies as st

from volnet.data.datasets import Dataset, load_mnist_sample
from volnet.web.app import DemoApp
from volnet.web.netspec import EXAMPLE
from volnet.web.session import DemoSession, Settings

from .harness import Refused, byte_mutations, dumps, json_edits, run_fuzz

with warnings.catch_warnings():   # starlette 1.x nudges towards httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.fuzz
DEMO_BUDGET = 64 << 20
SEEDS = [
    ("/api/net", {"model": "custom", "layers": EXAMPLE}),
    ("/api/net", {"model": "lenet5"}),
    ("/api/net", {"model": "cifar_example", "layers": ""}),
    ("/api/train", {"action": "start", "settings": {"lr": 0.002, "batch_size": 16, "epochs": 1}}),
    ("/api/train", {"action": "pause"}),
    ("/api/train", {"action": "resume"}),
    ("/api/train", {"action": "reset"}),
]
SPEC_PIECES = st.sampled_from([
    "conv 64 1 pad4, " * 13 + "pool 9 stride 4, pool 9 stride 4, fc 10", "fc 1024, fc 10",
    "conv 8 5 pad2", "pool 99", "dropout 1.5", "conv 8 5 s=0", "relu, " * 20 + "fc 10",
    "conv 64 9 pad4, conv 64 9 pad4, pool 2, fc 10", "lenet5", "custom", "start", "reset"])


@st.composite
def bodies(draw):
    path, seed = draw(st.sampled_from(SEEDS))
    kind = draw(st.integers(0, 4))
    if kind == 0:   # valid requests too, so the 2xx paths run between the mutated ones
        return path, json.dumps(seed)
    if kind > 1:
        return path, dumps(draw(json_edits(seed, extra_values=SPEC_PIECES, max_edits=1)))
    return path, draw(byte_mutations(json.dumps(seed).encode())).decode("latin-1")


@pytest.fixture(scope="module")
def demo():
    sample = load_mnist_sample()
    small = Dataset(sample.x_train[:64], sample.y_train[:64], sample.x_test[:40],
                    sample.y_test[:40], sample.class_names, sample.mean, sample.std, "small")
    session = DemoSession(small, Settings(eval_every=2, eval_size=40), max_bytes=DEMO_BUDGET)
    app = DemoApp(session)
    with TestClient(app.asgi, base_url="http://127.0.0.1:8000") as client:
        token = re.search(r'<meta name="volnet-token" content="([^"]+)">',
                          client.get("/").text).group(1)
        yield session, client, token
    session.close()


def test_fuzz_demo_json_endpoints(request, demo):
    session, client, token = demo
    headers = {"X-Volnet-Token": token, "Content-Type": "application/json"}

    def post(case):
        path, body = case
        try:
            response = client.post(path, content=body.encode("utf-8", "surrogatepass"),
                                   headers=headers)
        finally:
            session.close()   # stop any run the body started (outside the next case's trace)
        assert response.status_code < 500, (response.status_code, response.text[:300])
        payload = response.json()
        if response.status_code >= 400:
            assert isinstance(payload.get("error"), str) and payload["error"]
            raise Refused(response.status_code)
        if path == "/api/net":
            assert payload["model"] in ("lenet5", "cifar_example", "custom") and payload["rows"]
        else:
            assert payload["state"] in ("idle", "training", "paused", "done", "failed")

    # each case builds a network and its summary: fewer cases than the file readers by default
    run_fuzz(request, "demo-json", bodies(), post, budget=DEMO_BUDGET, default=100)
