"""Fixtures for the demo: one app on the bundled sample, a client that speaks as the page."""

import os
import re
import warnings

import pytest

with warnings.catch_warnings():   # starlette 1.x nudges towards httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from volnet.data.datasets import load_mnist_sample
from volnet.web.app import DemoApp
from volnet.web.server import DemoServer
from volnet.web.session import DemoSession, Settings

BASE_URL = "http://127.0.0.1:8000"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


@pytest.fixture(scope="module")
def sample():
    return load_mnist_sample()


@pytest.fixture(scope="module")
def demo(sample):
    session = DemoSession(sample, Settings())
    app = DemoApp(session)
    yield app
    session.close()


@pytest.fixture(scope="module")
def client(demo):
    with TestClient(demo.asgi, base_url=BASE_URL) as c:
        yield c


@pytest.fixture(scope="module")
def token(client):
    """The token as a browser gets it: from the page's meta tag."""
    page = client.get("/").text
    return re.search(r'<meta name="volnet-token" content="([^"]+)">', page).group(1)


@pytest.fixture
def post(client, token):
    """POST as the demo page does: JSON body and the page's token."""
    def send(path, payload=None, **kwargs):
        headers = {"X-Volnet-Token": token, **kwargs.pop("headers", {})}
        return client.post(path, json=payload, headers=headers, **kwargs)
    return send


@pytest.fixture
def post_png(client, token):
    """POST a PNG drawing to /api/predict as the page's canvas does."""
    def send(body, content_type="image/png"):
        return client.post("/api/predict", content=body,
                           headers={"X-Volnet-Token": token, "Content-Type": content_type})
    return send


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for every browser test; skipped (or failed under
    VOLNET_REQUIRE_BROWSER=1) where Debian's chromium is missing."""
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get("VOLNET_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(sample):
    """The demo served on a free loopback port, for the browser tests."""
    demo = DemoServer(port=0, data=sample).start()
    yield demo
    demo.stop()
