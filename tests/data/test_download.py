"""Downloads against a local HTTP server: checksum, cache, resume with Range, offline error."""

import hashlib
import http.server
import os
import threading
import typing

import pytest

from volnet.data import download as dl
from volnet.errors import DataError

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    requests: typing.ClassVar[list] = []

    def do_GET(self):
        Handler.requests.append(self.headers.get("Range"))
        body, status = PAYLOAD, 200
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            body, status = PAYLOAD[start:], 206
        if self.path == "/corrupt":
            body = b"x" + body[1:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_caches(server, tmp_path):
    dest = tmp_path / "f.bin"
    dl.download(server + "/f", str(dest), SHA)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    dl.download(server + "/f", str(dest), SHA)          # verified copy present: no request
    assert Handler.requests == [None]


def test_download_resumes_a_partial_file(server, tmp_path):
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:123_456])
    dl.download(server + "/f", str(dest), SHA)
    assert Handler.requests == ["bytes=123456-"] and dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_raises_and_keeps_nothing(server, tmp_path):
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="checksum mismatch"):
        dl.download(server + "/corrupt", str(dest), SHA)
    assert not dest.exists() and not (tmp_path / "f.bin.part").exists()


def test_offline_error_points_at_local_files(tmp_path, monkeypatch):
    monkeypatch.setitem(dl.SOURCES, "mnist", (["http://127.0.0.1:9/"], dl.SOURCES["mnist"][1]))
    with pytest.raises(DataError) as err:
        dl.fetch("mnist", root=str(tmp_path))
    text = str(err.value)
    assert "could not fetch dataset 'mnist'" in text and "--data DIR" in text


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VOLNET_CACHE", str(tmp_path))
    assert dl.cache_dir() == str(tmp_path)
    monkeypatch.delenv("VOLNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert dl.cache_dir() == str(tmp_path / "x" / "volnet")
