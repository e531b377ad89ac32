"""vn.summary: the lecture's numbers for AlexNet and VGG-16, strict tiling, formats."""

import json

import numpy as np
import pytest

import volnet as vn
from volnet.models.vgg import VGG_CONFIGS


@pytest.fixture(autouse=True)
def lazy_init(monkeypatch):
    # summaries read shapes only; skipping the random draw keeps the big zoo cheap
    monkeypatch.setattr(vn.init, "he_normal", lambda s, r, dtype=np.float32: np.zeros(s, dtype))


def row(table, name):
    return next(r for r in table.rows if r["name"] == name)


def test_alexnet_conv1_lecture_numbers():
    table = vn.summary(vn.models.alexnet(), (3, 227, 227))
    conv1 = row(table, "features.conv1")
    assert conv1["output"] == "55x55x96" and conv1["type"] == "Conv2d"
    assert (conv1["F"], conv1["S"], conv1["P"], conv1["K"]) == ((11, 11), (4, 4), (0, 0), 96)
    assert conv1["params"] == 34_848 + 96
    assert conv1["activations"] == 290_400                      # 55 * 55 * 96 neurons
    assert conv1["params_no_sharing"] == 105_705_600            # 290,400 * (363 + 1)
    assert conv1["macs"] == 290_400 * 363
    assert conv1["receptive_field"] == (11, 11) and conv1["jump"] == (4, 4)
    assert table.totals["params"] == 60_965_224


def test_vgg16_multiply_adds_match_hand_count():
    table = vn.summary(vn.models.vgg16(), (3, 224, 224))
    expected, size, channels = 0, 224, 3
    for item in VGG_CONFIGS["vgg16"]:           # independent count from the paper's table
        if item == "M":
            size //= 2
        else:
            expected += size * size * item * channels * 9
            channels = item
    expected += 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    assert table.totals["macs"] == expected
    assert round(table.totals["macs"] / 1e9, 2) == 15.47       # torchvision's "15.47 GFLOPS"
    assert table.totals["params"] == 138_357_544


def test_vgg16_memory_follows_the_lecture_breakdown():
    table = vn.summary(vn.models.vgg16(), (3, 224, 224), batch_size=2)
    # the lecture's per-layer VGG-16 rows (input, CONV and POOL volumes, FC), summed by hand,
    # plus torchvision's 7x7x512 adaptive pool output, which volnet keeps as a copy
    lecture = (150_528 + 2 * 3_211_264 + 802_816 + 2 * 1_605_632 + 401_408 + 3 * 802_816
               + 200_704 + 3 * 401_408 + 100_352 + 3 * 100_352 + 25_088 + 4_096 + 4_096 + 1_000)
    assert table.totals["activations"] == lecture + 25_088
    assert table.totals["activation_mb"] == pytest.approx((lecture + 25_088) * 4 * 2 / 2**20)
    assert table.totals["param_mb"] == pytest.approx(138_357_544 * 4 / 2**20)
    assert row(table, "features.1")["memory"] == 0              # ReLU runs in place


def test_vgg16_receptive_fields_in_rows():
    table = vn.summary(vn.models.vgg16(), (3, 224, 224))
    assert row(table, "features.28")["receptive_field"] == (196, 196)
    assert row(table, "features.30")["jump"] == (32, 32)


def test_residual_and_concat_rows_join_branches():
    block = vn.Residual(vn.Sequential(vn.Conv2d(4, 4, 3, padding=1)), body_name="body")
    net = vn.Sequential(block, vn.Concat(vn.Conv2d(4, 2, 1), vn.Conv2d(4, 3, 5, padding=2)))
    table = vn.summary(net, (4, 8, 8))
    names = [r["name"] for r in table.rows]
    assert names == ["input", "0.body.0", "0", "1.0", "1.1", "1"]
    assert row(table, "0")["type"] == "Residual" and row(table, "0")["receptive_field"] == (3, 3)
    assert row(table, "1")["output"] == "8x8x5" and row(table, "1")["receptive_field"] == (7, 7)


def test_strict_names_layer_and_formula():
    net = vn.models.alexnet(variant="torchvision")
    with pytest.raises(vn.ShapeError, match=r"features\.0.*\(224 - 11 \+ 2\*2\)/4 \+ 1 = 55\.25"):
        vn.summary(net, (3, 224, 224), strict=True)
    vn.summary(vn.models.alexnet(), (3, 227, 227), strict=True)     # (227 - 11)/4 + 1 = 55


def test_formats_are_consistent():
    table = vn.summary(vn.models.lenet5(), (1, 28, 28), batch_size=3)
    text = str(table)
    assert "28x28x6" in text and "61,706" in text
    markdown = table.to_markdown().splitlines()
    assert markdown[0].startswith("| layer | type | output |")
    assert len([line for line in markdown if line.startswith("| ")]) == len(table.rows) + 1
    data = json.loads(table.to_json())
    assert data["totals"]["params"] == 61_706 and data["totals"]["batch_size"] == 3
    assert [r["name"] for r in data["rows"]] == [r["name"] for r in table.rows]


def test_bad_arguments_raise_clear_errors():
    net = vn.models.lenet5()
    with pytest.raises(vn.ConfigError, match="per-example shape"):
        vn.summary(net, (28, 28))
    with pytest.raises(vn.ConfigError, match="batch_size"):
        vn.summary(net, (1, 28, 28), batch_size=0)
    with pytest.raises(vn.ConfigError, match="volnet Layer"):
        vn.summary("lenet5", (1, 28, 28))
    with pytest.raises(vn.ShapeError, match="expected 1 channels"):
        vn.summary(net, (3, 28, 28))
