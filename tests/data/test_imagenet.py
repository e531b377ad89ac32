"""ImageNet preprocessing and class names; ``volnet predict MODEL --weights FILE`` top-5."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from volnet.cli import main
from volnet.data.imagenet import MEAN, STD, class_names, preprocess
from volnet.errors import DataError


def test_class_names_are_the_ilsvrc_order():
    names = class_names()
    assert len(names) == 1000 and len(set(names)) == 998   # "crane" and "maillot" repeat
    assert (names[0], names[1], names[281], names[409], names[999]) == (
        "tench", "goldfish", "tabby", "analog clock", "toilet tissue")


def test_constant_image_normalises_to_hand_computed_values():
    x = preprocess(np.full((256, 256, 3), (255, 0, 51), dtype=np.uint8))
    expected = [(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (0.2 - MEAN[2]) / STD[2]]
    np.testing.assert_allclose(x[:, 100, 100], expected, rtol=1e-6)
    assert x.dtype == np.float32 and x.shape == (3, 224, 224)


def test_centre_crop_offsets_follow_torchvision():
    # shorter side already 256: no resize; torchvision crops at round((H - 224) / 2)
    h, w = 256, 301
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    image = np.stack([rows % 256, cols % 256, (rows + cols) % 256], axis=-1).astype(np.uint8)
    x = preprocess(image)
    top, left = 16, round((301 - 224) / 2)            # 38
    red = x[0] * STD[0] + MEAN[0]
    np.testing.assert_allclose(red * 255, rows[top:top + 224, left:left + 224] % 256, atol=1e-3)
    green = x[1] * STD[1] + MEAN[1]
    np.testing.assert_allclose(green * 255, cols[top:top + 224, left:left + 224] % 256, atol=1e-3)


def test_resize_matches_torch_antialiased_bilinear():
    # a smooth 300x400 image: shorter side -> 256, longer -> int(256 * 400 / 300) = 341
    yy, xx = np.meshgrid(np.linspace(0, 1, 300), np.linspace(0, 1, 400), indexing="ij")
    image = (255 * np.stack([yy, xx, (yy * xx)], -1)).round().astype(np.uint8)
    t = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    resized = F.interpolate(t, size=(256, 341), mode="bilinear", antialias=True,
                            align_corners=False)[0]
    top, left = 16, round((341 - 224) / 2)
    ref = (resized[:, top:top + 224, left:left + 224].numpy()
           - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    # Pillow rounds to 8 bits after resizing: at most one grey level apart
    np.testing.assert_allclose(preprocess(image), ref, atol=1.01 / 255 / min(STD))


def test_bad_images_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no such image file"):
        preprocess(str(tmp_path / "absent.png"))
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        preprocess(str(tmp_path / "x.png"))
    with pytest.raises(DataError, match=r"expects an \(H, W, 3\) uint8 array"):
        preprocess(np.zeros((4, 4), np.float32))


def resnet18_file(folder, favourites):
    """A torch.save'd ResNet-18 state dict (torchvision keys) whose classifier ranks
    ``favourites`` first, in that order, whatever the image."""
    from volnet.models import resnet18

    state = {k: torch.from_numpy(v) for k, v in resnet18(seed=3).state_dict().items()}
    state["fc.weight"].zero_()
    for rank, index in enumerate(favourites):
        state["fc.bias"][index] = 5.0 - rank
    torch.save(state, folder / "resnet18.pth")
    return folder / "resnet18.pth"


def test_predict_with_weights_prints_top5_imagenet_names(tmp_path, capsys):
    favourites = [281, 282, 285, 287, 207]        # tabby, tiger cat, Egyptian cat, lynx, golden
    weights = resnet18_file(tmp_path, favourites)
    Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(tmp_path / "cat.png")
    assert main(["predict", "resnet18", "--weights", str(weights), str(tmp_path / "cat.png")]) == 0
    line = capsys.readouterr().out.strip()
    names = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    assert names == ["tabby", "tiger cat", "Egyptian cat", "lynx", "golden retriever"]
