"""Fine-tuning: a network pretrained in PyTorch on one synthetic task, its head replaced,
fine-tuned on an image folder of another task; held-out accuracy improves and the frozen
part (weights and batch-norm statistics) stays bit-identical."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import nn

import volnet as vn
from volnet.cli import main
from volnet.data.images import read_image_folder
from volnet.errors import ConfigError, StateDictError
from volnet.train.finetune import (
    FrozenBatchNorm2d,
    find_head,
    finetune,
    frozen_batchnorm,
    load_backbone,
    replace_head,
)

PRETRAIN_SHAPES = ("ring", "cross", "hbar", "vbar")          # task A (pretraining, in torch)
TARGET_SHAPES = ("circle", "square", "triangle")             # task B (fine-tuning, in volnet)


def draw(shape, rng, size=32):
    """A bright shape of random colour, size and place on a dark noisy background."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
    d, fg = ImageDraw.Draw(img), tuple(int(v) for v in rng.integers(120, 256, 3))
    r = rng.uniform(0.22, 0.38) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        d.ellipse(box, fill=fg)
    elif shape == "ring":
        d.ellipse(box, outline=fg, width=3)
    elif shape == "square":
        d.rectangle(box, fill=fg)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif shape == "cross":
        d.line([(cx - r, cy), (cx + r, cy)], fill=fg, width=3)
        d.line([(cx, cy - r), (cx, cy + r)], fill=fg, width=3)
    else:
        w, h = (r, r / 4) if shape == "hbar" else (r / 4, r)
        d.rectangle([cx - w, cy - h, cx + w, cy + h], fill=fg)
    noise = rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def make_folder(root, shapes, per_class, seed):
    rng = np.random.default_rng(seed)
    for shape in shapes:
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            draw(shape, rng).save(root / shape / f"{i:03d}.png")
    return root


class TorchNet(nn.Module):
    """A small torch.nn ConvNet with batch norm, keyed features.* / classifier.* like VGG."""

    def __init__(self, num_classes):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def volnet_net(num_classes):
    """The same network in volnet, with the same state-dict keys."""
    return vn.Sequential({
        "features": vn.Sequential(vn.Conv2d(3, 16, 3, padding=1), vn.BatchNorm2d(16), vn.ReLU(),
                                  vn.MaxPool2d(2), vn.Conv2d(16, 32, 3, padding=1),
                                  vn.BatchNorm2d(32), vn.ReLU(), vn.MaxPool2d(2)),
        "avgpool": vn.GlobalAvgPool2d(), "flatten": vn.Flatten(),
        "classifier": vn.Linear(32, num_classes)})


@pytest.fixture(scope="module")
def pretrained_file(tmp_path_factory):
    """Pretrain TorchNet on task A with PyTorch and torch.save its state dict."""
    root = tmp_path_factory.mktemp("pretrain")
    folder = make_folder(root / "a", PRETRAIN_SHAPES, 60, seed=0)
    x, y, _ = read_image_folder(str(folder), (3, 32, 32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # small batches: extra threads only contend on a shared machine
    torch.manual_seed(0)
    module = TorchNet(len(PRETRAIN_SHAPES))
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
    torch.set_num_threads(threads)
    torch.save(module.state_dict(), root / "pretrained.pth")
    return root / "pretrained.pth"


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("target")
    make_folder(root / "train", TARGET_SHAPES, 30, seed=1)
    make_folder(root / "val", TARGET_SHAPES, 20, seed=2)
    return root


def test_finetune_improves_held_out_accuracy_and_keeps_frozen_part_bit_identical(
        pretrained_file, target):
    net = volnet_net(len(PRETRAIN_SHAPES))
    vn.io.load_weights(net, pretrained_file)
    x, y, classes = read_image_folder(str(target / "train"), (3, 32, 32))
    xv, yv, _ = read_image_folder(str(target / "val"), (3, 32, 32))
    assert classes == sorted(TARGET_SHAPES)
    xv = xv.astype(np.float32) / 255
    frozen_before = {k: v.copy() for k, v in net.state_dict().items() if k.startswith("features.")}
    head = replace_head(net, len(classes), rng=0)
    before = vn.train.evaluate(net, xv, yv)["accuracy"]
    history = finetune(net, x, y, epochs=6, batch_size=16, optimizer=vn.Adam(lr=1e-2),
                       val=(xv, yv), seed=0)
    after = history["val_accuracy"][-1]
    assert head == "classifier" and net.output_shape((3, 32, 32)) == (3,)
    assert after >= 0.8 and after >= before + 0.15, (before, history["val_accuracy"])
    state = net.state_dict()
    for key, value in frozen_before.items():           # weights and BN running statistics
        assert value.tobytes() == state[key].tobytes(), key
    assert [n for n, _, _ in net.named_params(trainable_only=True)] == ["classifier.weight",
                                                                        "classifier.bias"]
    assert type(net.features[1]) is vn.BatchNorm2d   # the frozen-BN switch is undone


def test_frozen_batchnorm_uses_running_statistics_while_training(rng):
    bn = vn.BatchNorm2d(3)
    bn.buffers["running_mean"][...] = [1.0, -1.0, 0.5]
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    expected = bn.forward(x, training=False)
    bn.freeze()
    with frozen_batchnorm(bn) as switched:
        assert switched == [bn] and isinstance(bn, FrozenBatchNorm2d)
        np.testing.assert_array_equal(bn.forward(x, training=True), expected)
    assert bn.buffers["num_batches_tracked"] == 0 and type(bn) is vn.BatchNorm2d
    net = vn.Sequential(vn.BatchNorm2d(3), vn.BatchNorm2d(3, affine=False))
    with frozen_batchnorm(net, train=("1.*",)) as switched:   # the second one is trained
        assert switched == [net[0]]


def test_training_more_than_the_head_by_pattern(pretrained_file, target):
    net = volnet_net(len(PRETRAIN_SHAPES))
    vn.io.load_weights(net, pretrained_file)
    x, y, _ = read_image_folder(str(target / "train"), (3, 32, 32))
    conv1 = net.features[0].params["weight"].copy()
    finetune(net, x[:32], y[:32], num_classes=3, train=("features.4.*", "classifier.*"), epochs=1)
    assert np.array_equal(net.features[0].params["weight"], conv1)
    assert {n for n, _, _ in net.named_params(trainable_only=True)} == {
        "features.4.weight", "features.4.bias", "classifier.weight", "classifier.bias"}
    with pytest.raises(ConfigError, match="match no parameter"):
        finetune(net, x[:4], y[:4], train=("nothing.*",), epochs=1)


def test_load_backbone_accepts_another_head_but_not_another_body(pretrained_file):
    net = volnet_net(3)
    load_backbone(net, pretrained_file, find_head(net))   # 4-class head in the file: dropped
    wrong = vn.Sequential({"features": vn.Sequential(vn.Conv2d(3, 16, 3, padding=1)),
                           "classifier": vn.Linear(16, 3)})
    with pytest.raises(StateDictError, match=r"unexpected keys \['features.1.bias'"):
        load_backbone(wrong, pretrained_file, "classifier")


def test_cli_finetune_prints_accuracies_and_saves_a_predictable_checkpoint(tmp_path, target,
                                                                           capsys):
    # cifar_example's keys are 0.* (conv) and 4.* (fc): pretrain weights for it in torch
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                           nn.Flatten(), nn.Linear(16 * 16 * 12, 10))
    torch.save(module.state_dict(), tmp_path / "w.pth")
    out = tmp_path / "ft.safetensors"
    code = main(["finetune", "cifar_example", "--weights", str(tmp_path / "w.pth"), "--data",
                 str(target), "--epochs", "2", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "held-out accuracy (60 images): before" in printed
    assert "trained 2 of 4 parameter arrays (4.weight, 4.bias)" in printed
    net = vn.load(str(out))
    np.testing.assert_array_equal(net[0].params["weight"], module[0].weight.detach().numpy())
    assert main(["predict", str(out), str(target / "val" / "circle" / "000.png")]) == 0
    assert capsys.readouterr().out.split(": ")[1].split(" ")[0] in TARGET_SHAPES
    assert main(["finetune", "cifar_example", "--weights", str(tmp_path / "w.pth"), "--data",
                 str(target), "--out", str(out)]) == 2          # existing file refused
    assert "exists" in capsys.readouterr().err
