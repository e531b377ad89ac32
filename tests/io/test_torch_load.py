"""load_torch: real torch.save files load without torch; forged and damaged files are refused."""

import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch_nets import ResNet18, randomise, run

import volnet as vn
from volnet.errors import CheckpointError
from volnet.io import load_torch
from volnet.io._torch_pickle import UnsafePickleError
from volnet.models import resnet18


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A full-width torchvision-keyed ResNet-18 saved by real torch.save."""
    torch.manual_seed(0)
    module = randomise(ResNet18())
    path = tmp_path_factory.mktemp("pth") / "resnet18.pth"
    torch.save(module.state_dict(), path)
    return path, module


def test_real_resnet18_file_loads_and_matches_torch_outputs(resnet_file, rng):
    path, module = resnet_file
    state = load_torch(path)
    assert list(state) == list(module.state_dict())          # torchvision's keys and order
    net = resnet18()
    net.load_state_dict(state)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), run(module, x), rtol=1e-4, atol=1e-4)


def test_values_dtypes_and_shapes_are_exact(resnet_file):
    path, module = resnet_file
    state = load_torch(path)
    for key, tensor in module.state_dict().items():
        assert state[key].dtype == tensor.numpy().dtype
        np.testing.assert_array_equal(state[key], tensor.numpy())
    assert state["bn1.num_batches_tracked"].shape == ()
    assert state["bn1.num_batches_tracked"] == 7


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_views_dtypes_and_nested_checkpoints(tmp_path, zip_format):
    base = torch.arange(24.0).reshape(4, 6)
    model = {"slice": base[:, 1:4], "transposed": base.t(), "half": torch.ones(3).half() / 3,
             "bf16": torch.tensor([1.5, -2.25]).bfloat16(), "int": torch.arange(3, dtype=torch.int32),
             "bool": torch.tensor([True, False]), "param": torch.nn.Parameter(torch.ones(2))}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model, "epoch": 3, "note": "hello"}, path,
               _use_new_zipfile_serialization=zip_format)
    state = load_torch(path, key="model")
    assert list(state) == list(model)
    for key, tensor in model.items():
        expected = tensor.detach().float().numpy() if key == "bf16" else tensor.detach().numpy()
        assert state[key].dtype == expected.dtype and state[key].flags.c_contiguous
        np.testing.assert_array_equal(state[key], expected)
    assert list(load_torch(path)) == [f"model.{k}" for k in model]   # numbers and strings dropped


def test_legacy_format_resnet_loads(tmp_path, rng):
    torch.manual_seed(1)
    module = randomise(ResNet18(num_classes=5, widths=(4, 8, 8, 8)))
    path = tmp_path / "legacy.pth"
    torch.save(module.state_dict(), path, _use_new_zipfile_serialization=False)
    net = resnet18(num_classes=5, widths=(4, 8, 8, 8))
    net.load_state_dict(load_torch(path))
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), run(module, x), rtol=1e-4, atol=1e-5)


def test_loading_does_not_import_torch_or_call_pickle_load(resnet_file):
    code = ("import sys, pickle\n"
            "def boom(*a, **k): raise RuntimeError('pickle.load called')\n"
            "pickle.load = pickle.loads = boom\n"
            "from volnet.io import load_torch\n"
            f"state = load_torch({str(resnet_file[0])!r})\n"
            "assert len(state) == 122 and 'torch' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _Gadget:
    """Pickles as a call to os.system: the classic code-execution payload."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _write_zip(path, pickle_bytes, storages=None, root="archive"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", pickle_bytes)
        archive.writestr(f"{root}/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"{root}/data/{key}", data)


def _legacy_bytes(obj_pickle):
    head = io.BytesIO()
    for item in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(item, head, protocol=2)
    return head.getvalue() + obj_pickle + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_forged_checkpoint_is_refused_and_runs_nothing(tmp_path, fmt):
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(OrderedDict(w=_Gadget(f"touch {sentinel}")), protocol=2)
    assert b"system" in payload
    path = tmp_path / "evil.pth"
    if fmt == "zip":
        _write_zip(path, payload)
    else:
        path.write_bytes(_legacy_bytes(payload))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system.*would run code.*"
                                                r"Nothing from the file was executed"):
        load_torch(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"),
                                          ("torch.nn.modules.conv", "Conv2d"),
                                          ("numpy.core.multiarray", "_reconstruct"),
                                          ("subprocess", "Popen")])
def test_any_global_outside_the_allow_list_is_refused(tmp_path, module, name):
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
    _write_zip(tmp_path / "x.pth", payload)
    with pytest.raises(UnsafePickleError, match=f"'{module}.{name}'"):
        load_torch(tmp_path / "x.pth")
    assert isinstance(UnsafePickleError("x"), CheckpointError)


def _tensor_pickle(numel_declared, size):
    """A hand-written torch pickle: {'w': FloatStorage key '0' viewed with ``size``}."""
    storage = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
               + b"J" + numel_declared.to_bytes(4, "little") + b"tQ")
    dims = b"(" + b"".join(b"J" + d.to_bytes(4, "little") for d in size) + b"t"
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + storage
            + b"K\x00" + dims + b"(K\x01t\x89ccollections\nOrderedDict\n)RtRs.")


def test_hand_written_pickle_matches_the_format(tmp_path):
    data = np.arange(4, dtype="<f4")
    _write_zip(tmp_path / "ok.pth", _tensor_pickle(4, [4]), {"0": data.tobytes()})
    np.testing.assert_array_equal(load_torch(tmp_path / "ok.pth")["w"], data)


def test_storage_shorter_than_declared_is_refused(tmp_path):
    _write_zip(tmp_path / "short.pth", _tensor_pickle(1000, [1000]), {"0": b"\0" * 16})
    with pytest.raises(CheckpointError, match=r"storage '0' should hold 1000 elements \(4000 "
                                              r"bytes\) but the file has 16 bytes"):
        load_torch(tmp_path / "short.pth")


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    _write_zip(tmp_path / "over.pth", _tensor_pickle(4, [9]), {"0": b"\0" * 16})
    with pytest.raises(CheckpointError, match="reaches element 8 of storage '0' which holds 4"):
        load_torch(tmp_path / "over.pth")


def test_setitem_on_a_non_dict_is_refused(tmp_path):
    _write_zip(tmp_path / "bad.pth", b"\x80\x02]X\x01\x00\x00\x00aK\x01s.")   # list['a'] = 1
    with pytest.raises(CheckpointError, match="corrupt or truncated pickle"):
        load_torch(tmp_path / "bad.pth")


@pytest.mark.parametrize("keep", [0.5, 0.99, 100])
def test_truncated_files_give_clear_errors(resnet_file, tmp_path, keep):
    data = resnet_file[0].read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    with pytest.raises(CheckpointError, match="truncated|incomplete|damaged|not a PyTorch"):
        load_torch(cut)


def test_flipped_byte_in_a_weight_record_is_detected(tmp_path):
    torch.save({"w": torch.ones(64)}, tmp_path / "ok.pth")
    data = bytearray((tmp_path / "ok.pth").read_bytes())
    at = data.index(np.ones(64, dtype="<f4").tobytes())
    data[at + 10] ^= 0xFF
    (tmp_path / "bad.pth").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"record 'ok/data/0' is damaged .*CRC"):
        load_torch(tmp_path / "bad.pth")


def test_legacy_truncated_storage(tmp_path):
    torch.save({"w": torch.ones(64)}, tmp_path / "l.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "l.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[:-20])
    with pytest.raises(CheckpointError, match=r"should hold 64 elements \(256 bytes\) but the file "
                                              r"has 236 bytes"):
        load_torch(tmp_path / "cut.pth")


@pytest.mark.parametrize("content, message", [(b"", "not a PyTorch checkpoint"),
                                              (b"hello world", "not a PyTorch checkpoint"),
                                              (b"PK\x03\x04garbage", "damaged zip archive")])
def test_non_checkpoints_are_named(tmp_path, content, message):
    (tmp_path / "f.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_torch(tmp_path / "f.pth")


def test_missing_file_and_missing_key(tmp_path, resnet_file):
    with pytest.raises(CheckpointError, match="no such file"):
        load_torch(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match=r"no entry 'model' at the top level; found \['bn1"):
        load_torch(resnet_file[0], key="model")


def test_wrong_architecture_reports_every_mismatch(resnet_file):
    net = vn.models.resnet18(num_classes=10)
    with pytest.raises(vn.StateDictError, match=r"shape mismatch for fc.weight: checkpoint "
                                                r"\(1000, 512\) vs model \(10, 512\)"):
        net.load_state_dict(load_torch(resnet_file[0]))


def _zoo_refs():
    """The zoo's torch.nn references with torchvision's module names (tests/models)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "models" / "zoo_torch_refs.py"
    spec = importlib.util.spec_from_file_location("zoo_torch_refs_for_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _narrow_alexnet_classifier(classifier, linear, hidden=32):
    """Same layers, narrower hidden FCs (9216 -> 32 -> 32 -> 10): a small file, same keys."""
    classifier[1], classifier[4], classifier[6] = (linear(9216, hidden), linear(hidden, hidden),
                                                   linear(hidden, 10))


def _torchvision_style(name):
    refs = _zoo_refs()
    torch.manual_seed(0)
    if name == "vgg11_bn":
        from volnet.models.vgg import VGG_CONFIGS

        return (randomise(refs.VGG(VGG_CONFIGS["vgg11"], batch_norm=True, num_classes=10,
                                   hidden=32)),
                vn.models.vgg11_bn(num_classes=10, hidden_features=32))
    if name == "alexnet_torchvision":
        module, net = refs.AlexNet(num_classes=10), vn.models.alexnet_torchvision(num_classes=10)
        _narrow_alexnet_classifier(module.classifier, torch.nn.Linear)
        _narrow_alexnet_classifier(net.classifier, lambda i, o: vn.Linear(i, o))
        return module.eval(), net
    return randomise(refs.GoogLeNet(10, aux_logits=True)), vn.models.googlenet(num_classes=10)


@pytest.mark.parametrize("name", ["vgg11_bn", "alexnet_torchvision", "googlenet"])
def test_torchvision_architecture_files_load_into_the_zoo(name, tmp_path, rng):
    module, net = _torchvision_style(name)
    torch.save(module.state_dict(), tmp_path / f"{name}.pth")
    state = load_torch(tmp_path / f"{name}.pth")
    if name == "googlenet":   # torchvision's file carries the auxiliary heads; the net has none
        assert any(k.startswith("aux1.") for k in state)
        with pytest.raises(vn.StateDictError, match=r"unexpected keys \(aux1"):
            net.load_state_dict(state)
    vn.io.load_weights(net, tmp_path / f"{name}.pth", ignore=vn.io.weights.absent_aux_heads(net))
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), run(module, x), rtol=1e-4, atol=1e-4)


def test_compressed_record_that_would_expand_hugely_is_refused(tmp_path):
    payload = b"\x80\x02}q\x00." + b"\x00" * (8 << 20)        # an empty dict, then 8 MB of zeros
    with zipfile.ZipFile(tmp_path / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", payload)
    assert (tmp_path / "bomb.pth").stat().st_size < 100_000
    with pytest.raises(CheckpointError, match=rf"declares {len(payload)} bytes from \d+ "
                                              "compressed bytes; refusing to expand it"):
        load_torch(tmp_path / "bomb.pth")


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_every_pickle_protocol_torch_can_write(tmp_path, protocol, zip_format):
    tensor = torch.arange(6.0).reshape(2, 3)
    torch.save({"w": tensor}, tmp_path / "p.pt", pickle_protocol=protocol,
               _use_new_zipfile_serialization=zip_format)
    np.testing.assert_array_equal(load_torch(tmp_path / "p.pt")["w"], tensor.numpy())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # torch.jit is deprecated in torch 2.13
def test_torchscript_archive_is_named(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(CheckpointError, match=r"TorchScript archive \(torch.jit.save\).*save "
                                              r"model.state_dict\(\)"):
        load_torch(tmp_path / "ts.pt")


def test_safetensors_files_load_the_same_way(tmp_path, resnet_file, rng):
    from safetensors.numpy import save_file  # the reference implementation writes the file

    path, module = resnet_file
    save_file({k: v.numpy() for k, v in module.state_dict().items()}, tmp_path / "r.safetensors")
    state = load_torch(tmp_path / "r.safetensors")
    for key, tensor in module.state_dict().items():
        np.testing.assert_array_equal(state[key], tensor.numpy())
    net = vn.models.resnet18(weights=tmp_path / "r.safetensors")
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(net.forward(x), run(module, x), rtol=1e-4, atol=1e-4)


def test_overlapping_view_cannot_inflate_a_tiny_storage(tmp_path):
    # a (5000, 5000) tensor with strides (1, 1) stays inside a 10,000-element storage
    storage = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00"
               b"\x00cpuJ\x10\x27\x00\x00tQ")
    payload = (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + storage
               + b"K\x00(M\x88\x13M\x88\x13t(K\x01K\x01t\x89ccollections\nOrderedDict\n)RtRs.")
    _write_zip(tmp_path / "big.pth", payload, {"0": b"\0" * 40_000})
    with pytest.raises(CheckpointError, match=r"size \(5000, 5000\) is far larger than its "
                                              r"storage \(10000 elements\)"):
        load_torch(tmp_path / "big.pth")
