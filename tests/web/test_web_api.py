"""Every endpoint of the demo: status codes, payloads checked against independent numbers, bad input."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from volnet.io.checkpoint import load

MEAN, STD = 0.1307, 0.3081   # the usual MNIST statistics, which the demo normalises with


def normalise(images):
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def png_bytes(array, mode="L"):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def lenet(post):
    """Every test starts from a fresh, untrained LeNet-5."""
    assert post("/api/net", {"model": "lenet5"}).status_code == 200


def test_page_carries_token_and_loads_local_assets_only(client, token):
    page = client.get("/").text
    assert len(token) >= 32
    assert 'src="/static/app.js"' in page and 'href="/static/style.css"' in page
    for text in (page, client.get("/static/app.js").text, client.get("/static/charts.js").text,
                 client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "@import" not in text  # no CDN


def test_models_lists_the_three_choices(client):
    body = client.get("/api/models").json()
    assert set(body["choices"]) == {"lenet5", "cifar_example", "custom"}
    assert body["example"].endswith("fc 10")


def test_lenet_summary_matches_hand_counts(client):
    net = client.get("/api/net").json()
    shapes = [row["shape"] for row in net["rows"]]
    assert shapes[0] == [1, 28, 28]
    assert [6, 28, 28] in shapes and [6, 14, 14] in shapes and [16, 10, 10] in shapes
    assert [16, 5, 5] in shapes and shapes[-1] == [10]
    # (5*5*1+1)*6 + (5*5*6+1)*16 + (400+1)*120 + (120+1)*84 + (84+1)*10
    assert net["total_params"] == 156 + 2416 + 48120 + 10164 + 850 == 61706
    assert sum(row["params"] for row in net["rows"]) == net["total_params"]
    conv1 = net["rows"][1]
    assert conv1["volume"] == "28x28x6" and conv1["window"] == "F=5 S=1 P=2 K=6"
    # the lecture's count without parameter sharing: every one of the 28*28*6 neurons has its own
    # 5*5*1 weights and bias
    assert conv1["params_no_sharing"] == 28 * 28 * 6 * (5 * 5 * 1 + 1) == 122_304
    assert conv1["receptive_field"] == 5


def test_custom_layer_list_summary(post):
    net = post("/api/net", {"model": "custom", "layers": "conv 8 5 pad2, relu, pool 2, fc 10"}).json()
    assert [row["shape"] for row in net["rows"]] == [[1, 28, 28], [8, 28, 28], [8, 28, 28],
                                                     [8, 14, 14], [1568], [10]]
    assert net["total_params"] == (5 * 5 + 1) * 8 + (8 * 14 * 14 + 1) * 10


def test_cifar_example_on_padded_digits(post):
    net = post("/api/net", {"model": "cifar_example"}).json()
    assert net["input_shape"] == [1, 32, 32]
    assert [12, 32, 32] in [row["shape"] for row in net["rows"]]
    assert net["total_params"] == (3 * 3 + 1) * 12 + (12 * 16 * 16 + 1) * 10


@pytest.mark.parametrize("payload, status, words", [
    ({"model": "custom", "layers": "conv 8 5 pad2, relu, pool 2"}, 400, "end with 'fc 10'"),
    ({"model": "custom", "layers": "conv 8, fc 10"}, 400, "item 1 'conv 8'"),
    ({"model": "custom", "layers": "conv 8 9, pool 4, conv 8 9, fc 10"}, 400, "item 3"),
    ({"model": "custom", "layers": "frobnicate 3, fc 10"}, 400, "unknown layer"),
    ({"model": "custom", "layers": ""}, 400, "empty"),
    ({"model": "resnet152"}, 400, "unknown network"),
    ({"layers": "fc 10"}, 400, "send {"),
    ({"model": 5}, 400, "send {"),
])
def test_bad_networks_are_4xx_and_keep_the_current_net(client, post, payload, status, words):
    response = post("/api/net", payload)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert client.get("/api/net").json()["model"] == "lenet5"


def test_malformed_json_bodies(client, token):
    headers = {"X-Volnet-Token": token, "Content-Type": "application/json"}
    for body, words in ((b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                        (b"\xff\xfe", "not valid JSON")):
        response = client.post("/api/train", content=body, headers=headers)
        assert response.status_code == 400
        assert words in response.json()["error"]


@pytest.mark.parametrize("payload, status, words", [
    ({"action": "explode"}, 400, "action must be one of"),
    ({}, 400, "action must be one of"),
    ({"action": "pause"}, 409, "nothing to pause"),
    ({"action": "resume"}, 409, "nothing to resume"),
    ({"action": "start", "settings": {"lr": -1}}, 400, "lr must be"),
    ({"action": "start", "settings": {"batch_size": 2.5}}, 400, "batch_size must be"),
    ({"action": "start", "settings": {"batch_size": True}}, 400, "batch_size must be"),
    ({"action": "start", "settings": {"momentum": 0.9}}, 400, "unknown setting"),
    ({"action": "start", "settings": [1]}, 400, "settings must be an object"),
])
def test_bad_training_controls(client, post, payload, status, words):
    response = post("/api/train", payload)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"


@pytest.mark.parametrize("query", ["train_from=-1", "train_from=x", "held_from=1e3"])
def test_status_bad_query_400(client, query):
    assert client.get(f"/api/status?{query}").status_code == 400


def test_status_of_a_fresh_net(client):
    status = client.get("/api/status").json()
    assert status["state"] == "idle" and status["step"] == 0
    assert status["train"] == [] and status["held_out"] == []
    assert status["settings"]["lr"] > 0


def test_filters_are_the_first_conv_weights(demo, client):
    body = client.get("/api/filters").json()
    weight = {name: p for name, p, _ in demo.session.view_net.named_params()}["0.weight"]
    assert body["layer"] == "0" and body["size"] == [5, 5] and len(body["filters"]) == 6
    for values, w in zip(body["filters"], weight[:, 0]):
        expected = np.round((w - w.min()) / (w.max() - w.min()) * 255).ravel()
        np.testing.assert_allclose(values, expected, atol=1)


def test_filters_of_a_first_fc_layer_are_input_sized_images(post, client):
    post("/api/net", {"model": "custom", "layers": "fc 10"})
    body = client.get("/api/filters").json()
    assert body["size"] == [28, 28] and len(body["filters"]) == 10
    assert all(len(f) == 784 for f in body["filters"])


def test_activations_match_a_layer_by_layer_forward(demo, client, sample):
    body = client.get("/api/activations?index=3").json()
    assert body["label"] == int(sample.y_test[3])
    net = demo.session.view_net
    x = normalise(sample.x_test[3:4])
    shapes = []
    for layer in net:
        x = layer.forward(x)
        shapes.append(list(x.shape[1:]))
    assert [layer["shape"] for layer in body["layers"]] == shapes
    scores = x[0].astype(np.float64)
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(body["probs"], expected, atol=1e-5)
    assert abs(sum(body["probs"]) - 1) < 1e-5
    first = body["layers"][0]
    assert len(first["maps"]) == 6 and len(first["maps"][0]) == 28 * 28
    np.testing.assert_array_equal(np.array(body["input"]).reshape(28, 28) > 0,
                                  sample.x_test[3, 0] > sample.x_test[3, 0].min())


@pytest.mark.parametrize("index", ["-1", "100", "abc", "1e3", "99999999999999999999", "", "%C2%B2",
                                   "%D9%A3", "+3", " 3"])
def test_activations_bad_index_400(client, index):
    response = client.get(f"/api/activations?index={index}")
    assert response.status_code == 400
    assert "index must be an integer in [0, 99]" in response.json()["error"]


def test_grid_predictions_match_the_net(demo, client, sample):
    body = client.get("/api/grid").json()
    assert body["labels"] == sample.y_test[:100].tolist()
    scores = demo.session.view_net.forward(normalise(sample.x_test[:100]))
    assert body["predicted"] == scores.argmax(axis=1).tolist()
    assert body["accuracy"] == pytest.approx(np.mean(scores.argmax(axis=1) == sample.y_test[:100]))


def test_digit_strip_is_the_held_out_digits(client, sample):
    response = client.get("/api/test-digits.png")
    assert response.headers["content-type"] == "image/png"
    strip = np.asarray(Image.open(io.BytesIO(response.content)))
    assert strip.shape == (28, 2800)
    np.testing.assert_array_equal(strip[:, 28 * 7:28 * 8], sample.x_test[7, 0])


def test_predict_endpoint_shape_and_dtype(post_png, sample):
    canvas = np.asarray(Image.fromarray(sample.x_test[0, 0]).resize((280, 280)))
    response = post_png(png_bytes(canvas))
    assert response.status_code == 200
    body = response.json()
    assert len(body["probs"]) == 10 and all(isinstance(p, float) for p in body["probs"])
    assert sum(body["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert body["predicted"] == int(np.argmax(body["probs"]))
    assert len(body["input"]) == 784 and min(body["input"]) == 0 and max(body["input"]) == 255


def test_predict_accepts_rgba_canvas_and_empty_drawing(post_png):
    rgba = np.zeros((280, 280, 4), np.uint8)   # a cleared, transparent canvas
    body = post_png(png_bytes(rgba, "RGBA")).json()
    assert body["input"] == [0] * 784 and sum(body["probs"]) == pytest.approx(1.0, abs=1e-5)


def bomb_png(width=20000, height=10000) -> bytes:
    """A real PNG declaring width x height grey pixels, all zero: about 200 KB on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, parts, row = zlib.compressobj(9), [], bytes(width + 1)   # filter byte + pixels
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def test_decompression_bomb_rejected(post_png):
    bomb = bomb_png()
    assert len(bomb) < 200 * 1024   # 194 KB on the wire, 200 megapixels declared
    response = post_png(bomb)
    assert response.status_code == 400
    assert "declares 20000x10000 pixels" in response.json()["error"]


@pytest.mark.parametrize("body", [
    b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    os.urandom(2048),
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,   # PNG signature, garbage after it
    b"",
])
def test_non_image_and_wrong_format_rejected(post_png, body):
    response = post_png(body)
    assert response.status_code == 400
    assert "PNG" in response.json()["error"]


def test_truncated_png_rejected(post_png, sample):
    data = png_bytes(sample.x_test[0, 0])
    response = post_png(data[:len(data) // 2])
    assert response.status_code == 400


def test_predict_needs_png_content_type(post_png, sample):
    response = post_png(png_bytes(sample.x_test[0, 0]), "image/gif")
    assert response.status_code == 415


@pytest.mark.parametrize("choice, size", [
    ({"model": "lenet5"}, 28), ({"model": "cifar_example"}, 32),
    ({"model": "custom", "layers": "conv 4 3 stride2 pad1, leakyrelu, avgpool 2, tanh, "
                                   "dropout 0.3, fc 16, sigmoid, fc 10"}, 28)])
def test_checkpoint_download_loads_with_volnet_load(demo, client, post, sample, tmp_path,
                                                    choice, size):
    post("/api/net", choice)
    response = client.get("/api/checkpoint")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    path = tmp_path / "demo.safetensors"
    path.write_bytes(response.content)
    net = load(path)
    border = (size - 28) // 2   # black (0) pixels around the digit, then normalised
    x = normalise(np.pad(sample.x_test[:20], ((0, 0), (0, 0), (border, border), (border, border))))
    np.testing.assert_array_equal(net.forward(x), demo.session.view_net.forward(x))
    assert net.preprocessing["mean"] == [MEAN] and net.preprocessing["input_shape"] == [1, size, size]
    assert net.preprocessing["zero_pad"] == border


def test_unknown_route_404_json(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert "no such page" in response.json()["error"]
