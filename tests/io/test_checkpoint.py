"""Checkpoints: rebuild with no user code, atomic writes, checksums, versions, zoo round trips."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import volnet as vn
from volnet.errors import CheckpointError
from volnet.io import checkpoint as ck
from volnet.io import safetensors as st
from volnet.io.architecture import from_json, to_json
from volnet.models import MODELS


def every_layer_net():
    """One of each layer type, nested, with custom child names and a Residual's options."""
    block = vn.Residual(vn.Sequential({"conv": vn.Conv2d(4, 4, 3, padding=1, bias=False, rng=0),
                                       "bn": vn.BatchNorm2d(4, momentum=0.2)}),
                        shortcut=vn.Conv2d(4, 4, 1, rng=1), activation=vn.LeakyReLU(0.2),
                        body_name="", shortcut_name="downsample")
    return vn.Sequential({
        "stem": vn.Conv2d(3, 4, 3, stride=1, padding=2, dilation=2, rng=2),
        "lrn": vn.LocalResponseNorm(3, alpha=2e-4, beta=0.7, k=2.0),
        "block": block,
        "mix": vn.Concat(vn.Sequential(vn.MaxPool2d(3, stride=1, padding=1), vn.Tanh()),
                         vn.Sequential(vn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                                       vn.Sigmoid()),
                         vn.Conv2d(4, 2, 1, groups=2, rng=3)),
        "pool": vn.AdaptiveAvgPool2d(3),
        "gap": vn.Sequential(vn.Identity(), vn.ReLU()),
        "flat": vn.Flatten(),
        "drop": vn.Dropout(0.25, rng=4),
        "fc": vn.Linear(10 * 9, 6, rng=5),
        "bn1": vn.BatchNorm1d(6),
        "head": vn.Linear(6, 3, rng=6),
        "soft": vn.Softmax(dim=1),
    })


def test_every_layer_type_roundtrips(tmp_path, rng):
    net = every_layer_net()
    x = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)
    net.forward(x, training=True)                     # move batch-norm running statistics
    net.freeze("fc.*")
    path = ck.save(tmp_path / "n.safetensors", net, preprocessing={"input_shape": [3, 6, 6]})
    back = vn.load(path)
    assert repr(back) == repr(net) and back.preprocessing == {"input_shape": [3, 6, 6]}
    a, b = net.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert "block.downsample.weight" in b and "block.conv.weight" in b
    assert np.array_equal(net.forward(x), back.forward(x))
    assert back["fc"].frozen == {"weight", "bias"}


def test_gap_global_pool_layer_roundtrips():
    net = vn.Sequential(vn.Conv2d(2, 3, 1, rng=0), vn.GlobalAvgPool2d(), vn.Flatten())
    assert repr(from_json(to_json(net))) == repr(net)


# the zoo's containers: Residual (resnet), Concat (googlenet), FlatConcat + SideBranch
# (inception_v3), dilations (context_module); AlexNet/VGG add only slow-to-build FC layers
ZOO = ["lenet5", "cifar_example", "context_module", "pattern", "googlenet", "resnet18",
       "inception_v3"]


@pytest.mark.parametrize("name", [n for n in ZOO if n in MODELS])
def test_zoo_architectures_roundtrip(name):
    net = MODELS[name]()
    back = from_json(to_json(net))
    assert repr(back) == repr(net)
    assert {k: v.shape for k, v in back.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()}


def test_float64_checkpoint_stays_float64(tmp_path, rng):
    net = vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0)).astype(np.float64)
    back = vn.load(ck.save(tmp_path / "d.safetensors", net))
    assert back[1].params["weight"].dtype == np.float64


def test_failure_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.models.lenet5(seed=1))
    good = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        ck.save(path, vn.models.lenet5(seed=2))
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["c.safetensors"]


def test_process_killed_mid_write_leaves_previous_file(tmp_path):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.models.lenet5(seed=1))
    good = path.read_bytes()
    code = ("import os, volnet as vn\n"
            "from volnet.io import checkpoint as ck\n"
            "real = os.fdopen\n"
            "class Dying:\n"
            "    def __init__(self, f): self.f = f\n"
            "    def __enter__(self): return self\n"
            "    def __exit__(self, *a): pass\n"
            "    def write(self, data): self.f.write(data[:len(data) // 2]); self.f.flush(); os._exit(9)\n"
            "os.fdopen = lambda fd, mode: Dying(real(fd, mode))\n"
            f"ck.save({str(path)!r}, vn.models.lenet5(seed=2))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 9
    assert path.read_bytes() == good
    vn.load(path)                                       # still loadable


def test_flipped_byte_fails_the_checksum(tmp_path):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.models.lenet5())
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        vn.load(path)


def _rewrite_metadata(path, **changes):
    tensors, meta = st.load_file(path)
    meta.update(changes)
    path.write_bytes(ck.sealed(tensors, meta))   # resealed: the deeper checks must hold


def test_future_format_version_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.models.lenet5())
    _rewrite_metadata(path, format_version=str(ck.FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="upgrade volnet"):
        vn.load(path)


def test_forged_architecture_cannot_import_outside_volnet(tmp_path):
    path = tmp_path / "c.safetensors"
    net = vn.Sequential(vn.Flatten())
    ck.save(path, net)
    arch = json.loads(to_json(net))
    arch["net"] = {"type": "system", "module": "os", "args": {"command": "touch pwned"}}
    _rewrite_metadata(path, architecture=json.dumps(arch))
    with pytest.raises(CheckpointError, match="only volnet layers"):
        vn.load(path)
    arch["net"] = {"type": "load", "module": "volnet.io.checkpoint", "args": {}}
    _rewrite_metadata(path, architecture=json.dumps(arch))
    with pytest.raises(CheckpointError, match="not a volnet Layer"):
        vn.load(path)


def test_plain_safetensors_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(st.serialize({"w": np.zeros(2, np.float32)}))
    with pytest.raises(CheckpointError, match="not a volnet checkpoint"):
        vn.load(path)


def test_overwrite_false_refuses(tmp_path):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.models.lenet5())
    with pytest.raises(CheckpointError, match="exists"):
        ck.save(path, vn.models.lenet5(), overwrite=False)


def test_weights_only_checkpoint_cannot_resume(tmp_path):
    path = ck.save(tmp_path / "c.safetensors", vn.models.lenet5())
    trainer = vn.Trainer(vn.models.lenet5(), vn.SGD(lr=0.1), progress=False)
    with pytest.raises(CheckpointError, match="weights only"):
        ck.resume(trainer, path)


def test_checkpoint_gets_the_usual_file_mode(tmp_path):
    path = ck.save(tmp_path / "c.safetensors", vn.Sequential(vn.Flatten()))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_forged_giant_layer_is_refused_before_allocation(tmp_path):
    import tracemalloc

    path = tmp_path / "c.safetensors"
    net = vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0))
    ck.save(path, net)
    arch = json.loads(to_json(net))
    arch["net"]["children"][1][1]["args"].update(in_features=10 ** 6, out_features=10 ** 6)
    _rewrite_metadata(path, architecture=json.dumps(arch))
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="declares 1,000,001,000,000 weights"):
        vn.load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("name", ["lenet5", "resnet18", "googlenet"])
def test_declared_size_matches_real_zoo_models(name):
    from volnet.io.architecture import declared_size

    net = MODELS[name]()
    stored = sum(v.size for v in net.state_dict().values())
    assert declared_size(json.loads(to_json(net))["net"]) == stored
