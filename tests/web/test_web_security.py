"""RELIABILITY.md section 7 H: loopback bind, Host allow-list, token/origin, fixed routes, size caps."""

import ipaddress
import socket

import pytest

from volnet.cli import build_parser
from volnet.web.server import DemoServer

WS_URL = "ws://127.0.0.1:8000"


def test_server_default_bind_is_loopback(sample):
    server = DemoServer(port=0, data=sample)
    try:
        assert server.host == "127.0.0.1"
        address = ipaddress.ip_address(server.sock.getsockname()[0])
        assert address in ipaddress.ip_network("127.0.0.0/8")
    finally:
        server.close()
    assert build_parser().parse_args(["demo"]).host == "127.0.0.1"


def test_port_in_use_is_a_clear_error(sample):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(ValueError, match="cannot listen on 127.0.0.1"):
            DemoServer(port=taken.getsockname()[1], data=sample)
    finally:
        taken.close()


@pytest.mark.parametrize("host", ["attacker.example", "localhost.attacker.example",
                                  "attacker.example:8000", "127.0.0.1.nip.io", ""])
def test_bad_host_header_403(client, host):
    response = client.get("/api/net", headers={"Host": host})
    assert response.status_code == 403
    assert "DNS-rebinding" in response.json()["error"]


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"])
def test_loopback_host_headers_served(client, host):
    assert client.get("/api/net", headers={"Host": host}).status_code == 200


def test_post_without_token_403(client):
    response = client.post("/api/train", json={"action": "pause"})
    assert response.status_code == 403
    assert "X-Volnet-Token" in response.json()["error"]


def test_post_with_wrong_token_403(client):
    response = client.post("/api/train", json={"action": "pause"}, headers={"X-Volnet-Token": "x"})
    assert response.status_code == 403


def test_post_from_foreign_origin_403(post):
    response = post("/api/net", {"model": "lenet5"}, headers={"Origin": "http://attacker.example"})
    assert response.status_code == 403
    assert "cross-origin" in response.json()["error"]


def test_post_from_same_origin_accepted(post):
    response = post("/api/net", {"model": "lenet5"}, headers={"Origin": "http://127.0.0.1:8000"})
    assert response.status_code == 200


def test_form_encoded_post_rejected(client, token):
    response = client.post("/api/net", data={"model": "lenet5"}, headers={"X-Volnet-Token": token})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_other_methods_rejected(client, token):
    for method in ("PUT", "DELETE", "PATCH"):
        response = client.request(method, "/api/net", headers={"X-Volnet-Token": token})
        assert response.status_code == 405


@pytest.mark.parametrize("path", [
    "/../volnet/web/app.py", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/static/../app.py",
    "/static/%2e%2e%2fapp.py", "/static/..%5c..%5capp.py", "/etc/passwd", "/static/index.html",
    "/static/", "/api/", "/static/app.js/", "/C:%5cWindows%5cwin.ini"])
def test_no_path_traversal(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text and "import" not in response.text


def test_only_the_asset_table_is_served(client):
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # No query parameter names a file: a path in the query changes nothing.
    assert client.get("/api/activations?index=0&path=/etc/passwd").status_code == 200


def test_upload_over_the_cap_413_before_reading(client, token):
    # The declared length alone decides; the body is never read.
    body = b"\x89PNG\r\n\x1a\n" + bytes(600 * 1024)
    response = client.post("/api/predict", content=body,
                           headers={"X-Volnet-Token": token, "Content-Type": "image/png"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_json_body_over_the_cap_413(client, token):
    response = client.post("/api/net", content=b"{" + b" " * 20000 + b"}",
                           headers={"X-Volnet-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 413


def test_chunked_body_without_content_length_411(client, token):
    def chunks():
        yield b'{"model": "lenet5"}'

    response = client.post("/api/net", content=chunks(),
                           headers={"X-Volnet-Token": token, "Content-Type": "application/json"})
    assert response.status_code == 411
    assert "Content-Length" in response.json()["error"]


def test_websocket_needs_token_and_allowed_origin(client, token):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), client.websocket_connect(f"{WS_URL}/ws") as ws:
        ws.receive_json()
    foreign = {"Origin": "http://attacker.example"}
    with pytest.raises(WebSocketDisconnect), \
            client.websocket_connect(f"{WS_URL}/ws?token={token}", headers=foreign) as ws:
        ws.receive_json()
    with client.websocket_connect(f"{WS_URL}/ws?token={token}") as ws:
        status = ws.receive_json()
    assert status["state"] in ("idle", "training", "paused", "done")
