"""Weight downloads: verified, cached, atomic, clear offline errors; pretrained loading in one call.

A local HTTP server (or a file:// URL) stands in for download.pytorch.org; the
files it serves are written by real torch.save and named the way torchvision
names its files (``<model>-<first 8 hex digits of the SHA-256>.pth``).
"""

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch
from torch import nn

import volnet as vn
from volnet.cli import main
from volnet.errors import CheckpointError, ConfigError
from volnet.io import weights as W


def torch_lenet():
    """volnet's lenet5 written in torch.nn with the same Sequential indices (state-dict keys)."""
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, 10)).eval()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Truncating(_Quiet):
    """Promises the whole file, sends half of it and hangs up."""

    def do_GET(self):
        data = (self.server.root / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])


def _serve(root, handler):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(root)))
    server.root = root
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A served folder holding a torch.save'd LeNet, registered as lenet5's weights."""
    torch.manual_seed(0)
    module = torch_lenet()
    root = tmp_path / "server"
    root.mkdir()
    staging = tmp_path / "staging.pth"
    torch.save(module.state_dict(), staging)
    data = staging.read_bytes()
    file = f"lenet5-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / file).write_bytes(data)
    monkeypatch.setitem(W.WEIGHTS, "lenet5", file)
    monkeypatch.setenv("VOLNET_CACHE", str(tmp_path / "cache"))
    server = _serve(root, _Quiet)
    yield {"module": module, "file": file, "root": root, "data": data,
           "url": f"http://127.0.0.1:{server.server_address[1]}/"}
    server.shutdown()
    server.server_close()


def test_download_verifies_caches_and_loads(published, monkeypatch, rng):
    monkeypatch.setattr(W, "BASE_URL", published["url"])
    net = vn.models.pretrained("lenet5")                # download + verify + load in one call
    cached = W.weights_dir() + "/" + published["file"]
    with open(cached, "rb") as f:
        assert f.read() == published["data"]
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = published["module"](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-5, atol=1e-5)
    # the cache answers from now on, even with the server unreachable
    monkeypatch.setattr(W, "BASE_URL", "http://127.0.0.1:1/")
    assert W.fetch_weights("lenet5") == cached


def test_file_url_mirror_and_custom_cache(published, tmp_path):
    path = W.fetch_weights("lenet5", cache=str(tmp_path / "c"),
                           base_url=published["root"].as_uri())
    assert path == str(tmp_path / "c" / published["file"])


def test_checksum_mismatch_keeps_nothing(published, tmp_path):
    wrong = "lenet5-00000000.pth"
    (published["root"] / wrong).write_bytes(published["data"])
    W.WEIGHTS["lenet5"] = wrong
    with pytest.raises(CheckpointError, match=r"checksum mismatch .*expected SHA-256 00000000\.\.\., "
                                              f"got {hashlib.sha256(published['data']).hexdigest()}"):
        W.fetch_weights("lenet5", cache=str(tmp_path / "c"), base_url=published["url"])
    assert list((tmp_path / "c").iterdir()) == []


def test_full_digest_is_enforced_where_recorded(published, tmp_path, monkeypatch):
    prefix = published["file"].split("-")[1][:8]
    monkeypatch.setitem(W.SHA256, published["file"], prefix + "0" * 56)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        W.fetch_weights("lenet5", cache=str(tmp_path / "c"), base_url=published["url"])


def test_corrupted_cache_file_is_replaced(published, tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / published["file"]).write_bytes(b"garbage")
    W.fetch_weights("lenet5", cache=str(cache), base_url=published["url"])
    assert (cache / published["file"]).read_bytes() == published["data"]


def test_broken_connection_leaves_no_file(published, tmp_path):
    server = _serve(published["root"], _Truncating)
    try:
        with pytest.raises(CheckpointError, match="connection closed after"):
            W.fetch_weights("lenet5", cache=str(tmp_path / "c"),
                            base_url=f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
    assert list((tmp_path / "c").iterdir()) == []


def test_offline_error_names_the_url_and_the_manual_route(published, tmp_path):
    with pytest.raises(CheckpointError, match=r"could not download the lenet5 weights from "
                                              r"http://127.0.0.1:1/lenet5-.*offline.*--weights FILE"):
        W.fetch_weights("lenet5", cache=str(tmp_path / "c"), base_url="http://127.0.0.1:1/")


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match="no published weights for 'lenet7'; available: "
                                          "alexnet_torchvision, googlenet"):
        W.fetch_weights("lenet7")


def test_torchvision_table_names_carry_their_hash_prefix():
    for name, file in W.WEIGHTS.items():
        assert name in vn.models.MODELS, name
        assert len(W.expected_digest(file)) >= 8
    assert W.expected_digest("resnet18-f37072fd.pth").startswith("f37072fd")


def test_wrong_architecture_names_the_file(published, monkeypatch):
    monkeypatch.setattr(W, "BASE_URL", published["url"])
    path = W.fetch_weights("lenet5")
    with pytest.raises(vn.StateDictError, match=r"shape mismatch for 11.weight: checkpoint "
                                                r"\(10, 84\) vs model \(5, 84\).*from .*lenet5-"):
        W.load_weights(vn.models.lenet5(num_classes=5), path)
    net = W.load_weights(vn.models.lenet5(num_classes=5), path, ignore=("11.*",), strict=False)
    np.testing.assert_array_equal(net[0].params["weight"],
                                  published["module"][0].weight.detach().numpy())


def test_cli_downloads_and_lists(published, tmp_path, capsys):
    cache = str(tmp_path / "c")
    assert main(["weights", "lenet5", "--mirror", published["url"], "--cache", cache]) == 0
    assert published["file"] in capsys.readouterr().out
    assert main(["weights", "--list", "--cache", cache]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("lenet5") and line.endswith("cached") for line in lines)
    assert any(line.startswith("resnet18") and "not downloaded" in line for line in lines)
    assert main(["weights", "lenet5", "--mirror", "http://127.0.0.1:1/",
                 "--cache", str(tmp_path / "d")]) == 2
    assert "could not download" in capsys.readouterr().err


def test_zoo_builders_load_weights_in_one_call(published, monkeypatch):
    monkeypatch.setattr(W, "BASE_URL", published["url"])
    expected = published["module"][7].weight.detach().numpy()     # F5 of LeNet
    for net in (vn.models.lenet5(weights="imagenet"),            # here: the served file
                vn.models.lenet5(weights=W.fetch_weights("lenet5")),
                vn.models.build("lenet5", weights=W.fetch_weights("lenet5"))):
        np.testing.assert_array_equal(net[7].params["weight"], expected)
    assert not np.array_equal(vn.models.lenet5()[7].params["weight"], expected)
    assert "weights" in str(__import__("inspect").signature(vn.models.resnet18))
