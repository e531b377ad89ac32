"""A safetensors reader, writer and validator with no dependency beyond NumPy.

File layout: an unsigned 64-bit little-endian header length ``n``, ``n`` bytes
of UTF-8 JSON, then the tensor bytes. The JSON maps each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the
byte buffer) and may hold ``"__metadata__"``, a str -> str map.

Validation mirrors the Rust reference implementation, and is stricter in one
place (duplicate JSON keys, which the reference parser silently accepts):
the header length must fit the file and be at most 100 MB, the header must be
a UTF-8 JSON object starting with ``{``, every dtype known, shapes non-negative
integers whose byte size (checked for overflow) equals ``end - begin``, the
tensors must tile the buffer exactly (sorted by offset: no gap, no overlap,
nothing after the last one). All checks run on the header before any tensor
is allocated.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct

import numpy as np

from volnet.errors import CheckpointError
from volnet.limits import check_budget, loads_json, open_regular

MAX_HEADER = 100_000_000
JSON_EXPANSION = 16   # bytes of Python objects per byte of header JSON, at most (measured ~8)
DTYPES = {"BOOL": np.dtype("bool"), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"),
          "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"),
          "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"),
          "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "U64": np.dtype("<u8")}
_CODES = {dt.newbyteorder("<") if dt.itemsize > 1 else dt: code for code, dt in DTYPES.items()}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise CheckpointError(f"safetensors header repeats key(s) {sorted(dup)}; the file is "
                              "ambiguous (forged or corrupt)")
    return dict(pairs)


def _dtype_code(array: np.ndarray, name: str) -> str:
    dt = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    if dt not in _CODES:
        raise CheckpointError(f"tensor {name}: dtype {array.dtype} cannot be stored in "
                              f"safetensors; use one of {sorted(DTYPES)}")
    return _CODES[dt]


def serialize(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (C order, little-endian).

    Example:
        >>> blob = serialize({"w": np.arange(3, dtype=np.float32)}, {"note": "hi"})
        >>> deserialize(blob)[0]["w"]
        array([0., 1., 2.], dtype=float32)
    """
    header, chunks, offset = {}, [], 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise CheckpointError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    for name, value in tensors.items():
        if name == "__metadata__":
            raise CheckpointError("'__metadata__' is reserved and cannot name a tensor")
        array = np.asarray(value)
        code = _dtype_code(array, name)
        data = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)   # the reference writer pads the header to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def parse_header(head: bytes, buffer_size: int) -> tuple[dict, dict[str, str]]:
    """Validate a header against the size of the byte buffer; return (entries, metadata)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("safetensors header is not valid UTF-8") from None
    if not text.startswith("{"):
        raise CheckpointError("safetensors header must be a JSON object starting with '{'")
    header = loads_json(text, "safetensors header", CheckpointError,
                        object_pairs_hook=_no_duplicates)
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError("safetensors __metadata__ must map strings to strings")
    entries = {name: _check_entry(name, info) for name, info in header.items()}
    _check_tiling(entries, buffer_size)
    return entries, metadata


def _check_entry(name: str, info) -> tuple[np.dtype, tuple[int, ...], int, int]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"tensor {name}: entry must have exactly dtype, shape, data_offsets")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(code, str) or code not in DTYPES:
        raise CheckpointError(f"tensor {name}: unknown or unsupported dtype {code!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"tensor {name}: shape must be a list of non-negative ints, got {shape}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets)):
        raise CheckpointError(f"tensor {name}: data_offsets must be two non-negative ints")
    begin, end = offsets
    if end < begin:
        raise CheckpointError(f"tensor {name}: data_offsets end {end} < begin {begin}")
    nbytes = span = DTYPES[code].itemsize
    for d in shape:   # span ignores zeros: NumPy refuses (0, 2**62) although it holds 0 bytes
        nbytes, span = nbytes * d, span * max(d, 1)
        if span >= 2 ** 63:
            raise CheckpointError(f"tensor {name}: shape {shape} overflows")
    if nbytes != end - begin:
        raise CheckpointError(f"tensor {name}: shape {shape} of {code} needs {nbytes} bytes but "
                              f"data_offsets span {end - begin}")
    return DTYPES[code], tuple(shape), begin, end


def _check_tiling(entries: dict, buffer_size: int) -> None:
    position = 0
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap"
            raise CheckpointError(f"tensor {name}: data_offsets {begin}..{end} {what} "
                                  f"(expected to start at {position})")
        position = end
    if position != buffer_size:
        raise CheckpointError(f"safetensors tensors cover {position} bytes but the file holds "
                              f"{buffer_size} after the header (truncated or trailing data)")


def _header_length(prefix: bytes, size: int) -> int:
    """The header length from the file's first 12 bytes (``prefix``), checked against ``size``."""
    if size < 8:
        raise CheckpointError(f"not a safetensors file: {size} bytes, the header length "
                              "alone takes 8")
    (n,) = struct.unpack("<Q", prefix[:8])
    if (n > MAX_HEADER or 8 + n > size) and prefix[8:9] != b"{":
        # every safetensors header is a JSON object: a text file, an image or a PyTorch
        # .pth whose first 8 bytes read as an absurd header length is named for what it is
        raise CheckpointError(
            f"not a safetensors file (it starts with {bytes(prefix[:12])!r}; a safetensors file "
            "starts with an 8-byte length and a JSON header): give a checkpoint written by "
            "volnet train or vn.save")
    if n > MAX_HEADER:
        raise CheckpointError(f"safetensors header declares {n} bytes, more than the 100 MB limit")
    if 8 + n > size:
        raise CheckpointError(f"safetensors header declares {n} bytes but the file holds "
                              f"{size - 8} after the length field (truncated)")
    return n


def deserialize(blob: bytes, max_bytes: int | str | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validate and decode safetensors bytes into ({name: array}, metadata).

    ``max_bytes`` bounds the parsed header and the decoded copies (see :mod:`volnet.limits`).
    """
    n = _header_length(blob[:12], len(blob))
    check_budget(JSON_EXPANSION * n + len(blob) - 8 - n, f"safetensors data ({len(blob):,} bytes)",
                 max_bytes, CheckpointError)
    entries, metadata = parse_header(blob[8:8 + n], len(blob) - 8 - n)
    base = 8 + n
    tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        array = np.frombuffer(blob[base + begin:base + end], dtype=dtype)
        tensors[name] = array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)
    return tensors, metadata


def read_file(path: str | os.PathLike, max_bytes: int | str | None = None) -> bytes:
    """The bytes of the safetensors file at ``path``, once its size fits the budget.

    Only a regular file is read, and only when its size, its header and the tensor
    copies a later :func:`deserialize` makes fit the memory budget ``max_bytes``
    (default ``$VOLNET_MAX_BYTES`` or 2 GiB; see :mod:`volnet.limits`). Readers that
    verify a checksum hash these bytes, the ones they decode, not a second read.
    """
    path = os.fspath(path)
    with naming_errors(path), open_regular(path, CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        n = _header_length(f.read(12), size)
        check_budget(size + JSON_EXPANSION * n + size - 8 - n,
                     f"{path}: reading {size:,} bytes of safetensors", max_bytes,
                     CheckpointError)
        f.seek(0)
        return f.read()


def load_file(path: str | os.PathLike, max_bytes: int | str | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read and validate a safetensors file; returns (tensors, metadata).

    The file (a regular file only) is read whole once its size, its header and the
    tensor copies fit the memory budget ``max_bytes`` (default ``$VOLNET_MAX_BYTES``
    or 2 GiB; see :mod:`volnet.limits`).
    """
    path = os.fspath(path)
    blob = read_file(path, max_bytes)
    with naming_errors(path):
        return deserialize(blob, max_bytes=max_bytes)


@contextlib.contextmanager
def naming_errors(path: str):
    """Errors name the file: OSError becomes CheckpointError, messages start with ``path``."""
    try:
        yield
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror}") from None
    except CheckpointError as err:
        if str(err).startswith(path):
            raise
        raise type(err)(f"{path}: {err}") from None
