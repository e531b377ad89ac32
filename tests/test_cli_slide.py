"""``volnet slide``: printed classes against the definition (the net on every crop,
softmax, averaged), the heat-map PNG, checkpoints, and clear refusals."""

import re

import numpy as np
import pytest
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.models import cifar_example


@pytest.fixture
def image_file(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (40, 44, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def mean_probabilities_over_crops(net, pixels, step, size=32):
    """Reference: the original net on each crop, softmax, then the mean over positions."""
    x = pixels.transpose(2, 0, 1).astype(np.float32) / 255
    probs = []
    for i in range(0, x.shape[1] - size + 1, step):
        for j in range(0, x.shape[2] - size + 1, step):
            scores = net.forward(x[None, :, i:i + size, j:j + size])[0].astype(np.float64)
            e = np.exp(scores - scores.max())
            probs.append(e / e.sum())
    return np.mean(probs, axis=0), len(probs)


def printed_classes(text):
    return [(name, float(p)) for name, p in re.findall(r"^\s+(\S+)\s+([0-9.]+)\s+\(max", text, re.MULTILINE)]


def test_top_classes_are_the_crop_averaged_probabilities(image_file, capsys):
    path, pixels = image_file
    assert main(["slide", "cifar_example", path, "--stride", "2", "--exact", "--top", "4"]) == 0
    out = capsys.readouterr().out
    mean, count = mean_probabilities_over_crops(cifar_example(), pixels, 2)
    assert f"averaged over {count} positions" in out and "5x7 positions" in out
    expected = np.argsort(-mean)[:4]
    got = printed_classes(out)
    assert [name for name, _ in got] == [str(k) for k in expected]
    assert np.allclose([p for _, p in got], mean[expected], atol=1e-4)


def test_size_resizes_the_image_before_sliding(image_file, capsys):
    path, _ = image_file
    assert main(["slide", "cifar_example", path, "--size", "36", "38", "--stride", "1"]) == 0
    out = capsys.readouterr().out
    assert "(36x38)" in out and "5x7 positions" in out


def test_out_writes_one_heat_map_panel_per_class_and_never_overwrites(image_file, tmp_path, capsys):
    path, _ = image_file
    out = tmp_path / "heat.png"
    assert main(["slide", "cifar_example", path, "--out", str(out), "--panels", "2"]) == 0
    with Image.open(out) as sheet:
        assert sheet.size == (2 * 44, 40 + 14)   # two panels the image's size, under a label strip
    before = out.read_bytes()
    assert main(["slide", "cifar_example", path, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["slide", "cifar_example", path, "--out", str(out), "--overwrite", "--panels", "1"]) == 0
    with Image.open(out) as sheet:
        assert sheet.size == (44, 54)


def test_heat_map_is_hot_at_the_most_likely_crop_and_cold_at_the_least(image_file, tmp_path, capsys):
    path, pixels = image_file
    out = tmp_path / "heat.png"
    assert main(["slide", "cifar_example", path, "--stride", "4", "--exact", "--out", str(out),
                 "--panels", "1"]) == 0
    mean, _ = mean_probabilities_over_crops(cifar_example(), pixels, 4)
    k = int(np.argmax(mean))
    x = pixels.transpose(2, 0, 1).astype(np.float32) / 255
    p = np.array([[np.exp(s - s.max())[k] / np.exp(s - s.max()).sum()
                   for s in (cifar_example().forward(x[None, :, i:i + 32, j:j + 32])[0]
                             for j in range(0, 13, 4))] for i in range(0, 9, 4)])
    with Image.open(out) as sheet:
        rgb = np.asarray(sheet.convert("RGB")).astype(int)[14:]   # below the label strip
    hot, cold = np.unravel_index(p.argmax(), p.shape), np.unravel_index(p.argmin(), p.shape)
    y, x_ = hot[0] * 4 + 16, hot[1] * 4 + 16          # the centre of the most likely crop
    assert rgb[y, x_].min() >= 0.55 * 255 - 1          # white-hot: heat 1 in every channel
    y, x_ = cold[0] * 4 + 16, cold[1] * 4 + 16
    assert rgb[y, x_].max() <= 0.45 * 255 + 1          # heat 0: only the dimmed grey image


def test_a_checkpoint_brings_its_input_shape_and_class_names(image_file, tmp_path, capsys):
    path, pixels = image_file
    net = cifar_example(seed=5)
    names = [f"c{k}" for k in range(10)]
    ckpt = vn.save(str(tmp_path / "net.safetensors"), net,
                   preprocessing={"input_shape": [3, 32, 32], "class_names": names})
    assert main(["slide", ckpt, path, "--exact", "--top", "3"]) == 0
    mean, _ = mean_probabilities_over_crops(net, pixels, 2)
    got = printed_classes(capsys.readouterr().out)
    assert [name for name, _ in got] == [names[k] for k in np.argsort(-mean)[:3]]


@pytest.mark.parametrize("args, words", [
    (["slide", "no_such_model", "IMAGE"], "neither a checkpoint file nor a zoo model"),
    (["slide", "cifar_example", "missing.png"], "no such image file"),
    (["slide", "cifar_example", "NOT_IMAGE"], "cannot read image"),
    (["slide", "cifar_example", "IMAGE", "--size", "20", "20"], "at least 32x32"),
    (["slide", "cifar_example", "IMAGE", "--stride", "0"], "positive int"),
    (["slide", "cifar_example", "IMAGE", "--top", "0"], "--top"),
])
def test_bad_input_gives_a_clear_error_and_status_2(args, words, image_file, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    args = [image_file[0] if a == "IMAGE" else str(junk) if a == "NOT_IMAGE" else a for a in args]
    assert main(args) == 2
    assert words in capsys.readouterr().err
