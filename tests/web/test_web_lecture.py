"""The lecture pages' endpoints against independent references: hand formulas, naive loops,
PyTorch's autograd, and volnet's own tools called directly."""

import io
import re

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.models.pattern import pattern
from volnet.models.registry import build
from volnet.web.layer_stats import LayerStats
from volnet.web.lecture.dense import HEIGHT, digit_strip


def get(client, path, **query):
    response = client.get(path, params=query)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("W, D, F, S, P, K", [(5, 3, 3, 2, 1, 2), (7, 1, 3, 1, 0, 1),
                                              (6, 2, 2, 2, 0, 3), (11, 3, 5, 2, 2, 4)])
def test_conv_cell_is_the_sum_of_its_products_plus_bias(client, W, D, F, S, P, K):
    out_size = (W - F + 2 * P) // S + 1
    for cell in (0, 5, K * out_size * out_size - 1):
        view = get(client, "/api/lecture/conv", W=W, D=D, F=F, S=S, P=P, K=K, cell=cell)
        x, w = np.array(view["input"]), np.array(view["weights"])   # x is already padded
        c = view["cell"]
        window = x[:, c["top"]:c["top"] + F, c["left"]:c["left"] + F]
        expected = float((window * w[c["k"]]).sum() + view["bias"][c["k"]])   # the definition
        assert c["value"] == pytest.approx(expected) == pytest.approx(
            view["output"][c["k"]][c["i"]][c["j"]])
        assert c["index"] == cell and (c["top"], c["left"]) == (c["i"] * S, c["j"] * S)
        assert sum(c["slice_sums"]) + c["bias"] == pytest.approx(c["value"])
    assert view["out_size"] == out_size
    assert view["params"] == K * (F * F * D + 1)
    assert view["params_no_sharing"] == out_size ** 2 * K * (F * F * D + 1)
    # the whole output volume is volnet's Conv2d on the unpadded input
    layer = vn.Conv2d(D, K, F, stride=S, padding=P, dtype=np.float64)
    layer.params["weight"][...], layer.params["bias"][...] = w, view["bias"]
    inner = x[:, P:x.shape[1] - P, P:x.shape[2] - P] if P else x
    np.testing.assert_allclose(layer.forward(inner[None])[0], view["output"])


def test_conv_invalid_sizes_are_explained(client):
    view = get(client, "/api/lecture/conv", W=7, D=3, F=3, S=3, P=0, K=2)
    assert not view["valid"] and "4/3 is not an integer" in view["why"]
    assert view["formula"].endswith("2.33333") and "output" not in view
    view = get(client, "/api/lecture/conv", W=3, D=1, F=7, S=1, P=1, K=1)
    assert not view["valid"] and "wider than the padded input" in view["why"]
    response = client.get("/api/lecture/conv", params={"W": 99})
    assert response.status_code == 400 and "W must be an integer in [1, 11]" in response.json()["error"]


def test_backprop_full_convolution_equals_autograd(client):
    for cell in range(0, 25, 6):
        body = get(client, "/api/lecture/backprop", W=5, F=3, K=2, seed=3, cell=cell)
        conv = body["conv"]
        x = torch.tensor(conv["x"], dtype=torch.float64)[None, None].requires_grad_()
        w = torch.tensor(conv["weights"], dtype=torch.float64)[:, None]
        torch.nn.functional.conv2d(x, w).backward(torch.tensor(conv["dout"], dtype=torch.float64)[None])
        np.testing.assert_allclose(conv["dx_full_conv"], x.grad[0, 0].numpy())
        np.testing.assert_allclose(conv["dx_backward"], x.grad[0, 0].numpy())
        i, j = divmod(cell, 5)
        assert conv["cell"]["sum"] == conv["cell"]["backward"] == x.grad[0, 0, i, j].item()
        np.testing.assert_array_equal(np.array(conv["flipped"]),
                                      np.array(conv["weights"])[:, ::-1, ::-1])


def test_maxpool_backward_routes_each_gradient_to_its_argmax(client):
    pool = get(client, "/api/lecture/backprop", pool_W=6, seed=1)["pool"]
    x, dout, dx = np.array(pool["x"]), np.array(pool["dout"]), np.array(pool["dx"])
    expected = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            window = x[2 * i:2 * i + 2, 2 * j:2 * j + 2]
            a, b = np.unravel_index(window.argmax(), window.shape)
            expected[2 * i + a, 2 * j + b] = dout[i, j]
            assert pool["routes"][i][j] == [2 * i + a, 2 * j + b]
            assert pool["out"][i][j] == window.max()
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("model, layer, shape", [("lenet5", "3", (1, 28, 28)),
                                                 ("context_module", "ctx_conv4_1", (21, 66, 66))])
def test_receptive_field_box_and_effective_field(client, model, layer, shape):
    layers = get(client, "/api/lecture/fields/layers", model=model)["layers"]
    assert layer in [entry["path"] for entry in layers]
    view = get(client, "/api/lecture/fields", model=model, layer=layer, row=4, col=6)
    net = build(model, seed=0, **({"init": "he"} if model == "context_module" else {}))
    field = vn.receptive_field(net, shape, layer=layer)
    assert tuple(view["size"]) == field.size and tuple(view["jump"]) == field.jump
    for axis, unit in enumerate((4, 6)):
        centre = field.start[axis] + unit * field.jump[axis]
        assert view["box"][axis] == [centre - (field.size[axis] - 1) / 2,
                                     centre + (field.size[axis] - 1) / 2]
    top, left, bottom, right = view["effective_box"]   # nonzero gradient only inside the field
    assert view["box"][0][0] <= top and bottom <= view["box"][0][1]
    assert view["box"][1][0] <= left and right <= view["box"][1][1]
    if model == "context_module":   # dilations 1, 1, 2, 4, 8: 1 + 2 * (1 + 1 + 2 + 4 + 8) = 33
        assert field.size == (33, 33)


def test_receptive_field_bad_names_are_400(client):
    assert client.get("/api/lecture/fields", params={"model": "nope"}).status_code == 400
    response = client.get("/api/lecture/fields", params={"model": "lenet5", "layer": "99"})
    assert response.status_code == 400 and "no layer" in response.json()["error"]


def test_dense_scores_match_dense_scores_and_crops(client, sample):
    body = get(client, "/api/lecture/dense", classifier="lenet5", stride=2)
    image, labels = digit_strip(sample.x_test, sample.y_test)
    assert labels == body["labels"] and np.array(body["image"]).shape == image.shape
    x = ((image - sample.mean[0]) / sample.std[0]).astype(np.float32)[None]
    expected = vn.dense_scores(build("lenet5", seed=0), x, 2, (1, 28, 28))
    np.testing.assert_allclose(body["scores"], expected, atol=1e-3)
    rows, cols = (HEIGHT - 28) // 2 + 1, (image.shape[1] - 28) // 2 + 1
    assert body["map_size"] == [rows, cols] and body["crops"] == rows * cols
    assert body["net_stride"] == 4 and body["passes"] == 4   # shifts 0 and 2 on each axis
    assert get(client, "/api/lecture/dense", classifier="lenet5")["passes"] == 1


def test_dense_upload_png(client, token):
    from PIL import Image

    picture = np.full((60, 150), 255, np.uint8)   # a dark stroke on white paper
    picture[10:50, 70:76] = 0
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    headers = {"X-Volnet-Token": token, "Content-Type": "image/png"}
    response = client.post("/api/lecture/dense?classifier=lenet5", content=buffer.getvalue(),
                           headers=headers)
    assert response.status_code == 200, response.text
    image = np.array(response.json()["image"])
    assert image.shape == (HEIGHT, 110) and image.max() > 200 and np.median(image) == 0  # inverted
    assert client.post("/api/lecture/dense", content=buffer.getvalue(),
                       headers={"Content-Type": "image/png"}).status_code == 403
    assert client.post("/api/lecture/dense", content=b"GIF89a",
                       headers=headers).status_code == 400


def checkpoint_bytes(folder, seed: int, mean: float, std: float):
    """A LeNet-5 checkpoint (weights from ``seed``) as ``volnet train`` writes one, and its net."""
    net = build("lenet5", seed=seed)
    vn.save(folder / f"lenet-{seed}.safetensors", net,
            preprocessing={"input_shape": [1, 28, 28], "mean": [mean], "std": [std]})
    return (folder / f"lenet-{seed}.safetensors").read_bytes(), net


def test_dense_with_an_uploaded_checkpoint(client, token, sample, tmp_path):
    headers = {"X-Volnet-Token": token, "Content-Type": "application/octet-stream"}
    assert client.get("/api/lecture/dense", params={"classifier": "checkpoint"}).status_code in (
        200, 409)   # 409 until a checkpoint was uploaded (another test may have done it)
    body, net = checkpoint_bytes(tmp_path, 5, 0.5, 0.25)   # its own normalisation, too
    response = client.post("/api/lecture/dense/checkpoint", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["input_shape"] == [1, 28, 28]
    result = get(client, "/api/lecture/dense", classifier="checkpoint", stride=4)
    image, _ = digit_strip(sample.x_test, sample.y_test)
    x = ((image - 0.5) / 0.25).astype(np.float32)[None]
    np.testing.assert_allclose(result["scores"], vn.dense_scores(net, x, 4, (1, 28, 28)),
                               atol=1e-3)
    zoo = get(client, "/api/lecture/dense", classifier="lenet5", stride=4)["scores"]
    assert not np.allclose(result["scores"], zoo, atol=1e-2)
    bad = client.post("/api/lecture/dense/checkpoint", content=b"not a checkpoint", headers=headers)
    assert bad.status_code == 400 and "the uploaded checkpoint" in bad.json()["error"]
    assert "/tmp" not in bad.json()["error"]
    assert client.post("/api/lecture/dense/checkpoint", content=body,
                       headers={"Content-Type": "application/octet-stream"}).status_code == 403
    big = client.post("/api/lecture/dense/checkpoint", content=bytes(9 * 1024 * 1024),
                      headers=headers)
    assert big.status_code == 413


def test_pattern_table_lint_and_the_3x3_comparison(client):
    body = get(client, "/api/lecture/patterns", N=1, M=3, K=2, input=36, F=3, widths=16)
    net = pattern(1, 3, 2, widths=16, input_shape=(3, 36, 36))
    assert body["total_params"] == vn.summary(net, (3, 36, 36)).totals["params"]
    assert any("not divisible by 2^M = 8" in item for item in body["lint"])
    assert any("4.5 is not an integer" in item for item in body["lint"])
    assert get(client, "/api/lecture/patterns", N=1, M=3, K=2, input=32)["lint"] == []
    no_pool = get(client, "/api/lecture/patterns", N=1, M=3, K=0, input=36, widths=16, pool=0)
    flat = pattern(1, 3, 0, widths=16, input_shape=(3, 36, 36), pool=False)
    assert no_pool["total_params"] == vn.summary(flat, (3, 36, 36)).totals["params"]
    assert no_pool["lint"] == [] and "POOL" not in no_pool["pattern"]
    three, seven = get(client, "/api/lecture/patterns", widths=8, input=16)["compare"]
    assert three["params"] == 3 * (9 * 8 * 8 + 8) and seven["params"] == 49 * 8 * 8 + 8
    assert three["macs"] == 3 * 9 * 8 * 8 * 16 * 16 and seven["macs"] == 49 * 8 * 8 * 16 * 16
    assert (three["nonlinearities"], seven["nonlinearities"]) == (3, 1)
    assert three["receptive_field"] == seven["receptive_field"] == 7


def test_layer_stats_of_plain_sgd_are_lr_times_gradient(rng):
    from volnet.data.batches import BatchIterator
    from volnet.train.callbacks import LambdaCallback

    net = vn.Sequential(vn.Conv2d(1, 3, 3, rng=rng), vn.ReLU(), vn.Flatten(), vn.Linear(48, 4, rng=rng))
    stats, seen = LayerStats(every=2), {}

    def remember(trainer, logs):   # each step's gradient norms and the weights after its update
        seen[logs["step"]] = {n: (np.linalg.norm(g), p.copy()) for n, p, g in net.named_params()}

    trainer = vn.Trainer(net, vn.SGD(lr=0.1), progress=False,
                         callbacks=[stats, LambdaCallback(on_batch_end=remember)])
    x, y = rng.standard_normal((48, 1, 6, 6)).astype(np.float32), rng.integers(0, 4, 48)
    trainer.fit(BatchIterator(x, y, 8, seed=0), epochs=1)
    steps = sorted(seen)
    assert [s["step"] for s in stats.samples] == [s for s in steps[1:] if s % 2 == 0]
    for sample in stats.samples:
        step = sample["step"]
        for name in ("0.weight", "3.weight"):
            grad_norm, weight = seen[step][name]
            previous = seen[step - 1][name][1]
            assert sample["grad_norm"][name] == pytest.approx(grad_norm, rel=1e-5)
            # SGD: W_s - W_(s-1) = -lr dW_s, so the ratio is lr |dW_s| / |W_(s-1)|
            expected = 0.1 * grad_norm / np.linalg.norm(previous)
            assert sample["update_ratio"][name] == pytest.approx(expected, rel=1e-3)
            assert np.linalg.norm(weight - previous) / np.linalg.norm(previous) == \
                pytest.approx(expected, rel=1e-3)


def test_lecture_pages_are_local_and_guarded(client):
    for name in ("conv", "backprop", "receptive-field", "dense", "patterns"):
        page = client.get(f"/lecture/{name}")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert '<meta name="volnet-token" content="' in page.text and "{{TOKEN}}" not in page.text
        for url in re.findall(r'(?:src|href)="([^"]+)"', page.text):
            assert url.startswith(("/", "data:")), url   # nothing from the internet
            if url.startswith("/static/"):
                assert client.get(url).status_code == 200
    assert 'href="/lecture/conv"' in client.get("/").text
    assert client.get("/lecture/conv", headers={"Host": "attacker.example"}).status_code == 403
    assert client.get("/lecture/nothing").status_code == 404
