"""Standing fuzz suite of every file reader: each mutated input loads correctly or raises a
VolnetError, and tracemalloc's peak stays under the memory budget (see harness.py)."""

import gzip
import io
import json
import os
import struct
import tempfile
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import strategies as st

import volnet as vn
from volnet.data.cifar10 import RECORD, read_cifar_batch
from volnet.data.idx import read_idx
from volnet.io import checkpoint as ck
from volnet.io import safetensors as sft
from volnet.io.architecture import to_json
from volnet.io.torch_load import load_torch

from .harness import BUDGET, byte_mutations, dumps, json_edits, run_fuzz

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def scratch():
    """One file path reused by every case (readers take paths)."""
    with tempfile.TemporaryDirectory(prefix="volnet-fuzz-") as folder:
        yield folder


def _write(folder, name, data: bytes) -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---- safetensors ---------------------------------------------------------------------------
SAFETENSORS_SEED = sft.serialize({
    "w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2, 3], np.int64),
    "empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5), "flag": np.array([True])},
    {"note": "seed"})
DTYPE_CODES = sorted(sft.DTYPES) + ["F8", "BF16", "X", "", 3, None]


def _header_parts(blob):
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]), blob[8 + n:]


@st.composite
def safetensors_rewrites(draw):
    """Header rewrites: a field of one entry edited, or the whole header tree edited."""
    header, data = _header_parts(SAFETENSORS_SEED)
    names = [k for k in header if k != "__metadata__"]
    name = draw(st.sampled_from(names))
    entry = dict(header[name])
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "tree", "duplicate", "length"]))
    text = None
    if field == "dtype":
        entry["dtype"] = draw(st.sampled_from(DTYPE_CODES))
    elif field == "shape":
        entry["shape"] = draw(st.lists(st.sampled_from([0, 1, 2, 3, 6, -1, 2 ** 31, 2 ** 62,
                                                        2 ** 64]), max_size=4))
    elif field == "data_offsets":
        begin, end = entry["data_offsets"]
        delta = draw(st.sampled_from([-8, -1, 1, 8, 2 ** 40]))
        entry["data_offsets"] = draw(st.sampled_from([[begin, end + delta], [begin + delta, end],
                                                      [end, begin], [begin], "x"]))
    if field in ("dtype", "shape", "data_offsets"):
        header = {**header, name: entry}
    elif field == "tree":
        header = draw(json_edits(header))
    elif field == "duplicate":   # the same key twice (json.dumps cannot write that)
        body = json.dumps(header, separators=(",", ":"))
        text = body[:-1] + "," + json.dumps(name) + ":" + json.dumps(entry) + "}"
    text = text if text is not None else dumps(header)
    raw = text.encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    length = len(raw) if field != "length" else draw(st.sampled_from(
        [0, 1, len(raw) - 1, len(raw) + 1, 2 ** 27, 2 ** 63]))
    return struct.pack("<Q", length) + raw + data


def _check_safetensors(blob):
    tensors, metadata = sft.deserialize(blob, max_bytes=BUDGET)
    again = sft.deserialize(sft.serialize(tensors, metadata))[0]   # loaded values round-trip
    for key, array in tensors.items():
        assert isinstance(array, np.ndarray) and array.dtype.isnative
        assert again[key].dtype == array.dtype and np.array_equal(again[key], array,
                                                                    equal_nan=True)


def test_fuzz_safetensors(request):
    strategy = st.one_of(byte_mutations(SAFETENSORS_SEED), safetensors_rewrites())
    run_fuzz(request, "safetensors", strategy, _check_safetensors)


# ---- PyTorch .pth (zip and legacy) ------------------------------------------------------------
def _pth_bytes(legacy=False):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"w": base, "t": base.t(), "row": base[1], "e": torch.ones(1).expand(5),
             "h": torch.ones(2, dtype=torch.bfloat16), "i": torch.arange(3),
             "nested": {"b": torch.zeros(2, dtype=torch.float64)}, "epoch": 3}
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


ZIP_SEED, LEGACY_SEED = _pth_bytes(), _pth_bytes(legacy=True)


def _zip_members(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


@st.composite
def pth_member_edits(draw):
    """Edit one record of the archive (the pickle, a storage...) and rebuild a valid zip."""
    members = _zip_members(ZIP_SEED)
    name = draw(st.sampled_from(sorted(members)))
    kind = draw(st.sampled_from(["bytes", "bytes", "drop", "grow", "rename"]))
    if kind == "bytes":
        members[name] = draw(byte_mutations(members[name]))
    elif kind == "drop":
        del members[name]
    elif kind == "grow":
        members[name] += bytes(draw(st.sampled_from([1, 8, 4096])))
    else:
        members[name + draw(st.sampled_from(["x", "/", ".pkl"]))] = members.pop(name)
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return buffer.getvalue()


def test_fuzz_pth(request, scratch):
    strategy = st.one_of(byte_mutations(ZIP_SEED), byte_mutations(LEGACY_SEED),
                         pth_member_edits())

    def load(blob):
        arrays = load_torch(_write(scratch, "f.pth", blob), max_bytes=BUDGET)
        assert arrays and all(isinstance(a, np.ndarray) and a.dtype.isnative
                              for a in arrays.values())

    run_fuzz(request, "pth", strategy, load)


# ---- IDX (raw and gzip) and CIFAR-10 binary ---------------------------------------------------
def _idx(array):
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.tobytes()


IDX_IMAGES = _idx(np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8))
IDX_LABELS = _idx(np.arange(7, dtype=np.uint8))


@st.composite
def idx_inputs(draw):
    """(bytes, ndim): header fields edited or bytes mutated, then maybe gzipped (or mutated
    after gzipping)."""
    seed, ndim = draw(st.sampled_from([(IDX_IMAGES, 3), (IDX_LABELS, 1)]))
    data = bytearray(seed)
    if draw(st.booleans()):   # field edits: type code, rank, one dimension
        data[2] = draw(st.sampled_from([8, 9, 0x0B, 0x0C, 0x0D, 0x0E, 0, 0xFF]))
        data[3] = draw(st.sampled_from([ndim, 0, 1, 2, 3, 4, 255]))
        at = 4 + 4 * draw(st.integers(0, ndim - 1))
        data[at:at + 4] = struct.pack(">I", draw(st.sampled_from(
            [0, 1, 2, 5, 7, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1])))
    else:
        data = bytearray(draw(byte_mutations(seed)))
    mode = draw(st.sampled_from(["raw", "gzip", "gzip-then-mutate"]))
    if mode != "raw":
        data = gzip.compress(bytes(data), mtime=0)
        if mode == "gzip-then-mutate":
            data = draw(byte_mutations(data))
    return bytes(data), ndim


def test_fuzz_idx(request, scratch):
    def load(case):
        blob, ndim = case
        array = read_idx(_write(scratch, "f-idx", blob), ndim=ndim, max_bytes=BUDGET)
        assert array.ndim == ndim and array.dtype.isnative

    run_fuzz(request, "idx", idx_inputs(), load)


CIFAR_SEED = b"".join(bytes([label]) + np.random.default_rng(label).integers(
    0, 256, RECORD - 1, dtype=np.uint8).tobytes() for label in (3, 9, 0))


def test_fuzz_cifar(request, scratch):
    def load(blob):
        x, y = read_cifar_batch(_write(scratch, "f.bin", blob), max_bytes=BUDGET)
        assert x.shape == (len(blob) // RECORD, 3, 32, 32) and len(y) == len(x)
        assert y.max() < 10 and x.dtype == np.uint8

    run_fuzz(request, "cifar", byte_mutations(CIFAR_SEED), load)


# ---- checkpoint architecture ------------------------------------------------------------------
def _seed_net():
    return vn.Sequential(
        vn.Conv2d(1, 2, 3, padding=1, rng=0), vn.BatchNorm2d(2), vn.ReLU(),
        vn.Residual(vn.Sequential(vn.Conv2d(2, 2, 1, rng=1), vn.ReLU())),
        vn.Concat(vn.MaxPool2d(2), vn.AvgPool2d(2)), vn.Flatten(), vn.Dropout(0.5, rng=2),
        vn.Linear(32, 3, rng=3))


CHECKPOINT_NET = _seed_net()
ARCHITECTURE = json.loads(to_json(CHECKPOINT_NET))
LAYER_CONFIGS = st.sampled_from([
    {"type": "Linear", "module": "volnet.layers.linear",
     "args": {"in_features": 4000, "out_features": 4000}},
    {"type": "Conv2d", "module": "volnet.layers.conv",
     "args": {"in_channels": 2, "out_channels": 2, "kernel_size": 3}},
    {"type": "ReLU", "module": "volnet.layers.activation", "args": {}},
    {"type": "Sequential", "module": "volnet.layers.containers", "args": {}, "children": []},
    {"type": "x", "module": "volnet.__main__", "args": {}},
    {"type": "system", "module": "os", "args": {"command": "true"}}])


@st.composite
def architectures(draw):
    """Architecture JSON text: tree edits (layer configs among the values), or byte edits."""
    if draw(st.integers(0, 3)):
        return dumps(draw(json_edits(ARCHITECTURE, extra_values=LAYER_CONFIGS)))
    return draw(byte_mutations(json.dumps(ARCHITECTURE).encode())).decode("utf-8", "replace")


def test_fuzz_checkpoint_architecture(request, scratch):
    path = os.path.join(scratch, "seed.safetensors")
    ck.save(path, CHECKPOINT_NET)
    tensors, metadata = sft.load_file(path)
    stored = {k[len("model."):]: v for k, v in tensors.items()}

    def load(text):
        # resealed, as an editor who recomputes the checksum would: the rebuild must hold
        blob = ck.sealed(tensors, {**metadata, "architecture": text})
        net = ck.load_checkpoint(_write(scratch, "c.safetensors", blob), max_bytes=BUDGET).net
        state = net.state_dict()   # loaded correctly: exactly the stored weights
        assert state.keys() == stored.keys()
        assert all(np.array_equal(state[k], v) for k, v in stored.items())

    run_fuzz(request, "checkpoint-architecture", architectures(), load)


# ---- checkpoint header (issue 24) -------------------------------------------------------------
HEADER_PREP = {"input_shape": [1, 4, 8], "mean": [0.5], "std": [0.25], "class_names": ["a", "b", "c"]}
HEADER_X = np.random.default_rng(1).standard_normal((2, 1, 4, 8)).astype(np.float32)
_JSON_METADATA = ("architecture", "preprocessing")


def _header_seed(folder):
    """(file bytes, header length, editable tree): the metadata's JSON strings parsed into
    trees, so edits reach inside the architecture and preprocessing as well as the table."""
    path = ck.save(os.path.join(folder, "header-seed.safetensors"), CHECKPOINT_NET,
                   preprocessing=HEADER_PREP)
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__")
    tree = {"table": header, "meta": {k: json.loads(v) if k in _JSON_METADATA else v
                                      for k, v in meta.items()}}
    seed = {"meta": tree["meta"], "text": {k: meta[k] for k in _JSON_METADATA}}
    return blob, n, tree, seed


def _header_bytes(tree, seed) -> bytes:
    """The header text of an edited tree; metadata trees the edits left alone (the same
    objects as in ``seed``) keep their original spelling, edited ones are re-encoded."""
    meta = tree.get("meta") if isinstance(tree, dict) else None
    table = tree.get("table") if isinstance(tree, dict) else None
    if not isinstance(meta, dict) or not isinstance(table, dict):
        return dumps(tree).encode()   # the whole layout edited away: still a header to read
    original = seed["meta"]
    meta = {k: v if isinstance(v, str) else
            seed["text"][k] if k in seed["text"] and v is original[k] else dumps(v)
            for k, v in meta.items()}
    return dumps({"__metadata__": meta, **table}).encode()


def test_fuzz_checkpoint_header(request, scratch):
    """Random edits of the JSON header -- the tensor table, every metadata entry, and inside
    the architecture and preprocessing -- load identically or are refused, never differently."""
    blob, n, tree, seed = _header_seed(scratch)
    reference = ck.load_checkpoint(_write(scratch, "ref.safetensors", blob))
    expected = {"arch": to_json(reference.net), "prep": reference.preprocessing,
                "state": reference.net.state_dict(), "out": reference.net.forward(HEADER_X)}
    assert _header_bytes(tree, seed) == blob[8:8 + n].rstrip() and expected["prep"] == HEADER_PREP

    def load(edited):
        text = _header_bytes(edited, seed)
        text += b" " * (-len(text) % 8)
        path = _write(scratch, "h.safetensors", struct.pack("<Q", len(text)) + text + blob[8 + n:])
        ckpt = ck.load_checkpoint(path, max_bytes=BUDGET, strict=True)
        assert to_json(ckpt.net) == expected["arch"]
        assert ckpt.preprocessing == expected["prep"]
        state = ckpt.net.state_dict()
        assert state.keys() == expected["state"].keys()
        assert all(np.array_equal(state[k], v) for k, v in expected["state"].items())
        np.testing.assert_array_equal(ckpt.net.forward(HEADER_X), expected["out"])

    # tensor-table reorderings say the same thing: they must load (identically)
    reordered = st.permutations(list(tree["table"].items())).map(
        lambda items: {"table": dict(items), "meta": tree["meta"]})
    edits = st.one_of(json_edits(tree), json_edits(tree), json_edits(tree), reordered)
    stats = run_fuzz(request, "checkpoint-header", edits, load)
    assert stats["refused"] > 0 and stats["loaded"] > 0
