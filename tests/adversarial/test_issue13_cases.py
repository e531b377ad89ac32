"""Issue 13: the 21 inputs an adversarial review found mishandled, one named test each.

Memory bombs are checked with tracemalloc: the refusal must come before the
allocation (peak far below what the input asks for). Web cases are in
tests/web/test_web_adversarial.py (they share the demo fixtures).
"""

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.data import write_idx
from volnet.data.idx import read_idx
from volnet.data.images import read_image_folder
from volnet.data.registry import load_dataset
from volnet.errors import BudgetError, CheckpointError, ConfigError, DataError
from volnet.io import checkpoint as ck
from volnet.io import safetensors as st
from volnet.io.torch_load import load_torch
from volnet.limits import ENV_VAR

MiB = 1 << 20


@contextlib.contextmanager
def peak_memory():
    """Yields a list that holds the tracemalloc peak (bytes) after the block."""
    result = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def run_cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def expanded_pth(path, count):
    """The review's file: ``count`` complex128 tensors expanded from one element to 2**24."""
    tensors = {f"t{i}": torch.zeros(1, dtype=torch.complex128).expand(2 ** 24)
               for i in range(count)}
    torch.save(tensors, path)
    return path


# ---- memory bombs ------------------------------------------------------------------------
@pytest.mark.parametrize("count, asks_gib", [(20, 5.0), (100, 25.0)])
def test_pth_of_expanded_complex_views_is_refused_before_allocating(tmp_path, count, asks_gib):
    path = expanded_pth(tmp_path / "bomb.pth", count)
    assert os.path.getsize(path) < 64 * 1024
    with peak_memory() as peak, pytest.raises(CheckpointError) as info:
        load_torch(path)
    assert isinstance(info.value, BudgetError)
    message = str(info.value)
    assert f"{count} tensors" in message and ENV_VAR in message and "max_bytes" in message
    needed = count * (2 ** 24 + 1) * 16   # the copies plus the one-element storages
    assert f"{needed:,} bytes" in message and needed / 2 ** 30 > asks_gib
    assert peak[0] < 4 * MiB


def test_pth_bomb_through_volnet_predict_exits_2(tmp_path):
    path = expanded_pth(tmp_path / "bomb.pth", 20)
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    code, err = run_cli("predict", "resnet18", "--weights", path, image)
    assert code == 2 and "budget" in err and ENV_VAR in err and "Traceback" not in err


def test_budget_is_raised_by_argument_env_var_and_cli_option(tmp_path, monkeypatch):
    path = tmp_path / "small.pth"
    torch.save({"w": torch.ones(1000, dtype=torch.float64)}, path)   # 8,000 + 8,000 bytes
    with pytest.raises(BudgetError, match="16,000 bytes"):
        load_torch(path, max_bytes=10_000)
    assert load_torch(path, max_bytes=20_000)["w"].sum() == 1000
    monkeypatch.setenv(ENV_VAR, "10K")
    with pytest.raises(BudgetError, match="budget of 10.0 KiB"):
        load_torch(path)
    monkeypatch.setenv(ENV_VAR, "1M")
    assert load_torch(path)["w"].shape == (1000,)
    monkeypatch.setenv(ENV_VAR, "1K")
    net = tmp_path / "net.safetensors"
    ck.save(net, vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0)))
    assert run_cli("evaluate", net)[0] == 2
    code, err = run_cli("--max-bytes", "1G", "summary", "lenet5")
    assert code == 0, err


def _hide_in_relu_args(layers):
    """An architecture whose only real layer is a ReLU; ``layers`` hide in a list argument."""
    hidden = [{"__layer__": layer} for layer in layers]
    return {"format": 1, "net": {"type": "ReLU", "module": "volnet.layers.activation",
                                 "args": {"extra": [hidden]}}}


def _checkpoint_with_architecture(tmp_path, arch):
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.Sequential(vn.ReLU()))
    tensors, meta = st.load_file(path)
    meta["architecture"] = json.dumps(arch)
    # resealed, as an editor who recomputes the checksum would: the deeper checks must hold
    path.write_bytes(ck.sealed(tensors, meta))
    return path


def test_layer_hidden_in_a_list_argument_is_counted_before_building(tmp_path):
    linear = {"type": "Linear", "module": "volnet.layers.linear",
              "args": {"in_features": 40000, "out_features": 40000, "bias": True}}
    path = _checkpoint_with_architecture(tmp_path, _hide_in_relu_args([linear]))
    with peak_memory() as peak, pytest.raises(CheckpointError, match="declares 1,600,040,000"):
        vn.load(path)
    assert peak[0] < 4 * MiB


def test_many_hidden_layers_in_a_small_file_are_refused_before_any_is_built(tmp_path):
    conv = {"type": "Conv2d", "module": "volnet.layers.conv",
            "args": {"in_channels": 64, "out_channels": 64, "kernel_size": 11}}
    arch = _hide_in_relu_args([conv] * 1900)   # 1,900 x 495,680 weights in ~290 KB of JSON
    path = _checkpoint_with_architecture(tmp_path, arch)
    assert os.path.getsize(path) < 300_000
    with peak_memory() as peak, pytest.raises(CheckpointError, match="declares 941,792,000"):
        vn.load(path)
    assert peak[0] < 16 * MiB


def test_gzip_idx_declaring_2_gib_is_refused_without_decompressing(tmp_path):
    import gzip

    path = tmp_path / "train-images-idx3-ubyte.gz"
    count = (2 ** 31 - 1) // 784   # just under 2 GiB of 28x28 images
    rng = np.random.default_rng(0)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28))
        f.write(rng.integers(0, 256, MiB, dtype=np.uint8).tobytes())   # incompressible
    assert os.path.getsize(path) < 2 * MiB
    with peak_memory() as peak, pytest.raises(DataError, match="can expand to"):
        read_idx(path, ndim=3)
    assert peak[0] < MiB


def test_gzip_idx_within_deflate_ratio_still_obeys_the_budget(tmp_path):
    path = tmp_path / "images.gz"
    write_idx(path, np.zeros((2000, 28, 28), np.uint8), compress=True)   # 1.5 MB declared
    with peak_memory() as peak, pytest.raises(BudgetError, match="IDX array"):
        read_idx(path, ndim=3, max_bytes="1M")
    assert peak[0] < MiB
    assert read_idx(path, ndim=3, max_bytes="2M").shape == (2000, 28, 28)


def test_cifar_folder_is_counted_before_reading(tmp_path):
    from volnet.data.cifar10 import RECORD, load_cifar10_folder

    for name in ("data_batch_1.bin", "test_batch.bin"):
        (tmp_path / name).write_bytes(bytes(RECORD * 100))
    with pytest.raises(BudgetError, match="200 CIFAR-10 records"):
        load_cifar10_folder(str(tmp_path), max_bytes=500_000)
    assert load_cifar10_folder(str(tmp_path), max_bytes="2M").x_train.shape == (100, 3, 32, 32)


def test_image_folder_is_counted_from_headers_before_decoding(tmp_path):
    for i in range(3):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a" / f"{i}.png")
    with pytest.raises(BudgetError, match="3 images of 3x64x64"):
        read_image_folder(str(tmp_path), (3, 64, 64), max_bytes=40_000)
    x, _, classes = read_image_folder(str(tmp_path), (3, 64, 64), max_bytes=200_000)
    assert x.shape == (3, 3, 64, 64) and classes == ["a"]


# ---- garbage that loaded -------------------------------------------------------------------
def _retype_first_weight(path, new_dtype="I32"):
    """Rewrite the first F32 tensor's dtype in the header, same byte count, same length."""
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    header[name]["dtype"] = new_dtype
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (n - len(text))
    assert len(text) == n
    path.write_bytes(blob[:8] + text + blob[8 + n:])
    return name


def _as_format_1(path):
    """What a checkpoint written before format 2 looks like: a checksum of the bytes only."""
    import hashlib

    tensors, meta = st.load_file(path)
    meta["format_version"] = "1"
    meta["tensor_sha256"] = hashlib.sha256(st.serialize(tensors)[8 + int.from_bytes(
        st.serialize(tensors)[:8], "little"):]).hexdigest()
    del meta["sha256"]
    path.write_bytes(st.serialize(tensors, meta))


def test_dtype_edit_in_checkpoint_header_fails_the_checksum(tmp_path):
    path = tmp_path / "lenet.safetensors"
    ck.save(path, vn.models.lenet5())
    assert vn.load(path) is not None
    name = _retype_first_weight(path)
    with pytest.raises(CheckpointError, match="checksum mismatch: the header .*tensor table"):
        vn.load(path)
    assert name.startswith("model.")


def test_format_1_checkpoints_still_load_and_catch_the_dtype_edit(tmp_path):
    path = tmp_path / "old.safetensors"
    net = vn.models.lenet5(seed=3)
    ck.save(path, net)
    _as_format_1(path)
    with pytest.warns(ck.UnverifiedCheckpointWarning, match="format 1"):
        back = vn.load(path)
    assert all(np.array_equal(a, b) for a, b in zip(back.state_dict().values(),
                                                     net.state_dict().values()))
    _retype_first_weight(path)   # the format-1 checksum does not cover the table ...
    with pytest.raises(CheckpointError, match="stored as int32 but the network holds float32"), \
            pytest.warns(ck.UnverifiedCheckpointWarning):
        vn.load(path)            # ... the dtype check does


def test_volnet_evaluate_refuses_the_dtype_edited_checkpoint(tmp_path):
    path = tmp_path / "lenet.safetensors"
    ck.save(path, vn.models.lenet5(), preprocessing={"input_shape": [1, 28, 28],
                                                     "mean": [0.1307], "std": [0.3081]})
    _retype_first_weight(path)
    code, err = run_cli("evaluate", path, "--data", "mnist-sample")
    assert code == 2 and "checksum mismatch" in err


# ---- raw tracebacks --------------------------------------------------------------------------
def test_100000_deep_safetensors_header_is_a_checkpoint_error(tmp_path):
    text = b"{" + b'"a":{' * 100_000 + b"}" * 100_001
    text += b" " * (-len(text) % 8)
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(CheckpointError, match="nests 100001 levels deep"):
        st.load_file(path)
    with pytest.raises(CheckpointError, match="nests"):
        load_torch(path)


def test_100000_deep_architecture_exits_2_on_the_cli(tmp_path):
    deep = '{"format":1,"net":' + "[" * 100_000 + "]" * 100_000 + "}"
    path = tmp_path / "c.safetensors"
    ck.save(path, vn.Sequential(vn.ReLU()))
    tensors, meta = st.load_file(path)
    meta["architecture"] = deep
    path.write_bytes(ck.sealed(tensors, meta))   # resealed: the depth check must hold
    with pytest.raises(CheckpointError, match="architecture JSON nests 100001 levels"):
        vn.load(path)
    code, err = run_cli("evaluate", path)
    assert code == 2 and "nests 100001 levels deep" in err and "Traceback" not in err
    with pytest.raises(CheckpointError, match="nests"):
        vn.io.architecture.from_json(deep)


# ---- hangs ----------------------------------------------------------------------------------
@pytest.fixture
def alarm():
    """Fail (instead of hanging the suite) if the test blocks for 20 s."""
    def hung(*_):
        raise TimeoutError("blocked on a FIFO")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _image_dataset(folder, train_size=32, test_size=32, per_class=2):
    for split, size in (("train", train_size), ("test", test_size)):
        for label in ("a", "b"):
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(np.full((size, size, 3), 40 * i, np.uint8)).save(
                    folder / split / label / f"{i}.png")
    return folder


def test_fifo_named_png_in_an_image_folder_is_skipped_not_waited_on(tmp_path, alarm):
    folder = _image_dataset(tmp_path)
    os.mkfifo(folder / "train" / "a" / "x.png")
    with pytest.warns(UserWarning, match="x.png is not a regular file"):
        data = load_dataset(str(folder))
    assert len(data.x_train) == 4
    with pytest.raises(DataError, match="FIFO"):
        vn.data.images.open_image(str(folder / "train" / "a" / "x.png"))


def test_volnet_train_with_a_fifo_in_the_folder_finishes(tmp_path, alarm):
    folder = _image_dataset(tmp_path)
    os.mkfifo(folder / "train" / "b" / "x.png")
    out = tmp_path / "c.safetensors"
    with pytest.warns(UserWarning, match="not a regular file"):
        code, err = run_cli("train", "cifar_example", "--data", folder, "--epochs", "1",
                            "--out", out, "--quiet")
    assert code == 0, err
    assert vn.load(out).output_shape((3, 32, 32)) == (2,)


# ---- silent successes ----------------------------------------------------------------------
def _mnist_folder(folder, n_train=40, n_test=20, train_size=28, test_size=28):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, size in (("train", n_train, train_size), ("t10k", n_test, test_size)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, size, size),
                                                                      dtype=np.uint8))
        write_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


def test_mnist_folder_with_zero_training_images_is_refused(tmp_path):
    folder = _mnist_folder(tmp_path / "empty", n_train=0)
    out = tmp_path / "c.safetensors"
    code, err = run_cli("train", "lenet5", "--data", folder, "--epochs", "1", "--out", out,
                        "--quiet")
    assert code == 2 and "training split holds 0 images" in err and str(folder) in err
    assert not out.exists()


def test_fit_with_zero_examples_is_refused():
    net = vn.Sequential(vn.Flatten(), vn.Linear(4, 2, rng=0))
    with pytest.raises(ConfigError, match="N = 0"):
        vn.fit(net, np.zeros((0, 1, 2, 2), np.float32), np.zeros(0, int), epochs=1,
               progress=False)
    with pytest.raises(ConfigError, match="make no batch of 8"):
        vn.fit(net, np.zeros((5, 1, 2, 2), np.float32), np.zeros(5, int), epochs=1,
               batch_size=8, drop_last=True, progress=False)


def test_resume_with_a_contradicting_lr_is_refused(tmp_path):
    folder = _mnist_folder(tmp_path / "d")
    out = tmp_path / "c.safetensors"
    assert run_cli("train", "lenet5", "--data", folder, "--epochs", "1", "--out", out,
                   "--quiet", "--lr", "0.001")[0] == 0
    before = out.read_bytes()
    code, err = run_cli("train", "lenet5", "--data", folder, "--epochs", "2", "--resume", out,
                        "--lr", "1e9", "--quiet")
    assert code == 2 and "--lr 0.001" in err and "--lr 1000000000.0 contradicts" in err
    assert out.read_bytes() == before
    code, err = run_cli("train", "lenet5", "--data", folder, "--epochs", "2", "--resume", out,
                        "--batch-size", "7", "--quiet")
    assert code == 2 and "--batch-size 64" in err
    # the same values, or none, resume the run with the saved rate
    assert run_cli("train", "lenet5", "--data", folder, "--epochs", "2", "--resume", out,
                   "--lr", "0.001", "--quiet")[0] == 0
    state = ck.load_checkpoint(out).trainer_state
    assert state["epoch"] == 2 and state["schedule"]["base_lr"] == 0.001


def test_mismatched_train_and_test_image_sizes_are_refused_before_training(tmp_path):
    folder = _mnist_folder(tmp_path / "d", train_size=32, test_size=28)
    with pytest.raises(DataError, match="train-images-idx3-ubyte holds 32x32 images but "
                                        "t10k-images-idx3-ubyte holds 28x28"):
        load_dataset(str(folder))
    start = time.perf_counter()
    code, err = run_cli("train", "cifar_example", "--data", folder, "--epochs", "1", "--out",
                        tmp_path / "c.safetensors", "--quiet")
    assert code == 2 and str(folder) in err and "Linear" not in err
    assert not (tmp_path / "c.safetensors").exists()
    assert time.perf_counter() - start >= 0   # refused at load time (no epoch ran: no file)


def test_fit_refuses_val_images_of_another_shape():
    net = vn.Sequential(vn.Flatten(), vn.Linear(16, 2, rng=0))
    x = np.zeros((8, 1, 4, 4), np.float32)
    with pytest.raises(ConfigError, match=r"val images have shape \(1, 3, 3\)"):
        vn.fit(net, x, np.zeros(8, int), epochs=1, progress=False,
               val=(np.zeros((4, 1, 3, 3), np.float32), np.zeros(4, int)))


# ---- minor ---------------------------------------------------------------------------------
KILLED_SAVE = """
import os, sys, time
import volnet as vn
from volnet.io import checkpoint as ck
def stall(*args):   # the temporary file is written and fsynced; die before the rename
    print("written", flush=True)
    time.sleep(60)
os.replace = stall
ck.save(sys.argv[1], vn.models.lenet5())
"""


def test_part_file_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "c.safetensors"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "written"
    proc.kill()   # SIGKILL: no cleanup runs
    proc.wait()
    stale = list(tmp_path.glob(".c.safetensors.*.part"))
    assert len(stale) == 1 and not path.exists()
    live = tmp_path / f".c.safetensors.{os.getpid()}-other.part"   # a save still running
    live.write_bytes(b"in progress")
    ck.save(path, vn.Sequential(vn.Flatten()))
    assert not stale[0].exists() and live.exists()
    assert vn.load(path).output_shape((2, 3)) == (6,)


# ---- found while fuzzing -------------------------------------------------------------------
def test_pickle_declaring_2_gib_of_bytes_is_refused_without_allocating(tmp_path):
    """CPython's unpickler allocates a BINBYTES8 length before reading it (12 bytes -> 2 GiB)."""
    import zipfile

    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 31) + b"x")
    with peak_memory() as peak, pytest.raises(CheckpointError, match="expected 2147483648 bytes"):
        load_torch(path)
    assert peak[0] < MiB


def test_architecture_cannot_import_volnet_main(tmp_path):
    """Importing volnet.__main__ would run the command line inside vn.load."""
    arch = {"format": 1, "net": {"type": "main", "module": "volnet.__main__", "args": {}}}
    path = _checkpoint_with_architecture(tmp_path, arch)
    with pytest.raises(CheckpointError, match="only volnet layers"):
        vn.load(path)
    assert "volnet.__main__" not in sys.modules


def test_pickle_memo_index_bomb_is_refused_without_allocating(tmp_path):
    """The C unpickler sizes its memo table by the largest PUT index: 9 bytes -> 4 GiB."""
    import zipfile

    path = tmp_path / "memo.pth"
    pickle_bytes = b"\x80\x02N" + b"r" + struct.pack("<I", 2 ** 28) + b"."   # LONG_BINPUT 2**28
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
    with peak_memory() as peak, pytest.raises(CheckpointError, match="memo index 268435456"):
        load_torch(path)
    assert peak[0] < MiB
