"""Our safetensors reader/writer: the spec's bytes, parity with the reference package, rejects."""

import json
import struct

import numpy as np
import pytest
import safetensors.numpy as reference

from volnet.errors import CheckpointError
from volnet.io.safetensors import deserialize, load_file, serialize

ARRAYS = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "f64": np.array([1.5, -2.25]),
    "i64": np.array([[-(2 ** 40)]], dtype=np.int64),
    "u8": np.arange(5, dtype=np.uint8),
    "flag": np.array([True, False]),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.array(3.0, dtype=np.float32),
}


def test_written_bytes_follow_the_spec():
    blob = serialize({"a": np.ones(3, np.float32), "b": np.zeros((2, 2), np.int64)}, {"k": "v"})
    (n,) = struct.unpack("<Q", blob[:8])
    head = blob[8:8 + n]
    body = head.rstrip(b" ")
    assert n % 8 == 0 and head == body + b" " * (n - len(body)) and body.endswith(b"}")
    header = json.loads(head)
    assert header["__metadata__"] == {"k": "v"}
    assert header["a"] == {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert header["b"] == {"dtype": "I64", "shape": [2, 2], "data_offsets": [12, 44]}
    assert blob[8 + n:8 + n + 12] == np.ones(3, "<f4").tobytes() and len(blob) == 8 + n + 44


def test_ours_to_theirs_and_back():
    ours = serialize(ARRAYS, {"note": "x"})
    theirs = reference.load(ours)
    for name, value in ARRAYS.items():
        assert theirs[name].dtype == value.dtype and np.array_equal(theirs[name], value)
    back, meta = deserialize(reference.save(ARRAYS, metadata={"note": "y"}))
    assert meta == {"note": "y"}
    for name, value in ARRAYS.items():
        assert back[name].shape == value.shape and np.array_equal(back[name], value)


def _file(header: dict, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    head = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}

BAD = [
    ("too small", b"\x01\x02", "8"),
    ("header past end", struct.pack("<Q", 500) + b"{}", "truncated"),
    ("header over 100 MB", struct.pack("<Q", 200_000_000) + b"{}", "100 MB"),
    ("non-UTF-8", _file({}, raw_header=b"{\xff}"), "UTF-8"),
    ("not an object", _file({}, raw_header=b"[1, 2]"), "starting with"),
    ("bad JSON", _file({}, raw_header=b"{nope"), "not valid JSON"),
    ("duplicate key", _file({}, raw_header=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": '
                                         b'[0, 8]}, "a": {"dtype": "F32", "shape": [2], '
                                         b'"data_offsets": [0, 8]}}', data=bytes(8)), "repeats"),
    ("unknown dtype", _file({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
     "unknown or unsupported dtype"),
    ("end before begin", _file({"a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}}, bytes(4)),
     "end 2 < begin 4"),
    ("size mismatch", _file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
     "needs 12 bytes"),
    ("overflow", _file({"a": {"dtype": "F64", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 8]}},
                       bytes(8)), "overflows"),
    ("negative dim", _file({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}), "non-negative"),
    ("gap", _file({"a": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)), "gap"),
    ("overlap", _file({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                       "b": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, bytes(4)),
     "overlaps"),
    ("trailing bytes", _file(GOOD, bytes(9)), "trailing"),
    ("truncated data", _file(GOOD, bytes(7)), "truncated"),
    ("non-str metadata", _file({"__metadata__": {"k": 1}, **GOOD}, bytes(8)), "strings"),
    ("extra entry field", _file({"a": {**GOOD["a"], "x": 1}}, bytes(8)), "exactly"),
]


@pytest.mark.parametrize("name, blob, message", BAD, ids=[b[0] for b in BAD])
def test_rejects(name, blob, message):
    with pytest.raises(CheckpointError, match=message):
        deserialize(blob)


def test_good_minimal_file_and_tensor_named_in_errors(tmp_path):
    tensors, meta = deserialize(_file(GOOD, bytes(8)))
    assert tensors["a"].tolist() == [0.0, 0.0] and meta == {}
    with pytest.raises(CheckpointError, match="tensor a"):
        deserialize(_file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)))
    (tmp_path / "t.safetensors").write_bytes(_file(GOOD, bytes(7)))
    with pytest.raises(CheckpointError, match="t.safetensors"):
        load_file(tmp_path / "t.safetensors")


def test_writer_refuses_what_it_cannot_store():
    with pytest.raises(CheckpointError, match="complex"):
        serialize({"c": np.zeros(2, np.complex64)})
    with pytest.raises(CheckpointError, match="str to str"):
        serialize({"a": np.zeros(1)}, {"k": 3})
