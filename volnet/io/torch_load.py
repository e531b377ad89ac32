"""Read PyTorch checkpoint files into NumPy arrays without importing torch.

Two container formats are understood:

* the zip archive ``torch.save`` writes since PyTorch 1.6 (``<root>/data.pkl``
  plus one raw record ``<root>/data/<key>`` per storage, ``<root>/byteorder``);
* the legacy stream (``_use_new_zipfile_serialization=False``): a magic
  number, a protocol version, a sys-info dict, the object pickle, the list of
  storage keys, then each storage as an 8-byte element count and its bytes.

The pickles go through :mod:`volnet.io._torch_pickle`, whose allow-list admits
only tensors, storages, ordered dicts and plain containers; storage sizes are
checked against the file before anything is allocated. ``.safetensors`` files
are read by :mod:`volnet.io.safetensors`.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np

from volnet.errors import CheckpointError
from volnet.io._torch_pickle import StorageRef, TensorRef, materialise, restricted_load
from volnet.limits import check_budget, open_regular

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_EXPANSION = 20   # largest accepted uncompressed/compressed size ratio of a zip record


def load_torch(path, key: str | None = None,
               max_bytes: int | str | None = None) -> OrderedDict[str, np.ndarray]:
    """Read a ``torch.save`` checkpoint (or ``.safetensors``) as a dict of NumPy arrays.

    Nested dicts (``{"model": state_dict, "epoch": 3}``) are flattened to dotted
    keys and non-tensor leaves (numbers, strings) are dropped; ``key`` picks one
    sub-dict first (``key="model"``). Arrays keep the file's dtype (bfloat16 is
    widened to float32) in native byte order.

    Args:
        path: A ``.pth``/``.pt`` file from ``torch.save`` or a ``.safetensors`` file.
        key: Optional top-level entry holding the state dict.
        max_bytes: memory budget for everything the file would materialise (its
            storages plus every tensor view, counted before any is read); default
            ``$VOLNET_MAX_BYTES`` or 2 GiB (see :mod:`volnet.limits`).

    Returns:
        An ordered dict name -> array, in the file's order.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt or forged; an
            ``UnsafePickleError`` (a ``CheckpointError``) when its pickle names
            a Python global outside the allow-list. Nothing is executed. Also a
            :class:`~volnet.errors.BudgetError` when the tensors would exceed ``max_bytes``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "bad.pth"
        >>> _ = path.write_bytes(b"not a checkpoint")
        >>> load_torch(path)
        Traceback (most recent call last):
        ...
        volnet.errors.CheckpointError: ...is not a PyTorch checkpoint...
    """
    path = os.fspath(path)
    if str(path).endswith(".safetensors"):
        from volnet.io.safetensors import load_file

        tensors, metadata = load_file(path, max_bytes=max_bytes)
        if metadata.get("format") == "volnet-checkpoint":
            from volnet.io.checkpoint import verified_tensors

            tensors, _ = verified_tensors(path, max_bytes)   # its checksum, as vn.load checks
            # a checkpoint of volnet train / vn.save: its weights without the
            # "model." prefix; optimizer state ("optim.*") is not weights
            return OrderedDict((k[len("model."):], v) for k, v in tensors.items()
                               if k.startswith("model."))
        return OrderedDict(tensors)
    obj = _read_object(path, max_bytes)
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            found = sorted(str(k) for k in obj) if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{path}: no entry {key!r} at the top level; found {found}")
        obj = obj[key]
    arrays = OrderedDict()
    _flatten(obj, "", arrays)
    if not arrays:
        raise CheckpointError(f"{path}: holds no tensors (top level is {type(obj).__name__})")
    return arrays


def _flatten(obj, prefix: str, out: dict) -> None:
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for name, value in obj.items():
            _flatten(value, f"{prefix}.{name}" if prefix else str(name), out)


def _read_object(path: str, max_bytes=None):
    """The checkpoint's object with every tensor materialised as a NumPy array."""
    with open_regular(path, CheckpointError) as handle:
        head = handle.read(4)
        size = os.fstat(handle.fileno()).st_size
    if head.startswith(b"PK"):
        return _read_zip(path, max_bytes)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        check_budget(size, f"{path}: reading this legacy-format checkpoint", max_bytes,
                     CheckpointError)
        with open_regular(path, CheckpointError) as handle:
            return _read_legacy(handle.read(), path, max_bytes)
    if tarfile.is_tarfile(path):
        raise CheckpointError(f"{path}: the pre-1.0 PyTorch tar format is not supported; load it "
                              "in PyTorch and re-save it with torch.save(state_dict, path)")
    raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither the zip format of "
                          "torch.save nor the legacy pickle format) and not .safetensors")


def _read_zip(path: str, max_bytes=None):
    try:
        archive = zipfile.ZipFile(path)
    except Exception as err:  # noqa: BLE001 - zipfile raises many types on damaged archives
        raise CheckpointError(f"{path}: damaged zip archive ({err}); the file is probably "
                              "truncated, re-download or re-save it") from None
    with archive:
        names = {info.filename: info for info in archive.infolist()}
        roots = [n[: -len("data.pkl")] for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise CheckpointError(f"{path}: a zip file but not a torch.save archive "
                                  "(expected exactly one <root>/data.pkl)")
        root = roots[0]
        if root + "constants.pkl" in names or any(n.startswith(root + "code/") for n in names):
            raise CheckpointError(f"{path} is a TorchScript archive (torch.jit.save), which holds "
                                  "code; load it in PyTorch and save model.state_dict() with "
                                  "torch.save instead. Nothing from the file was executed.")
        order = _read_record(archive, names, root + "byteorder", path, optional=True) or b"little"
        if order not in (b"little", b"big"):
            raise CheckpointError(f"{path}: unknown byte order {order[:20]!r}")
        obj, unpickler = restricted_load(_read_record(archive, names, root + "data.pkl", path),
                                         what=path)
        _check_total(obj, unpickler.storages, path, max_bytes)
        storages = {}
        for key, ref in unpickler.storages.items():
            name = f"{root}data/{key}"
            _check_size(ref, names[name].file_size if name in names else None, path)
            storages[key] = _as_array(_read_record(archive, names, name, path), ref, order)
    return _resolve(obj, storages, path)


def _read_record(archive, names, name, path, optional=False) -> bytes | None:
    if name not in names:
        if optional:
            return None
        raise CheckpointError(f"{path}: record {name!r} is missing; the archive is incomplete")
    info = names[name]
    # torch.save stores records uncompressed; bound what a compressed one may expand to
    # before reading it (a deflate "bomb" reaches ratios above 1000:1).
    if info.file_size > MAX_EXPANSION * info.compress_size + (1 << 20):
        raise CheckpointError(f"{path}: record {name!r} declares {info.file_size} bytes from "
                              f"{info.compress_size} compressed bytes; refusing to expand it "
                              "(torch.save writes uncompressed records)")
    try:
        return archive.read(name)
    except Exception as err:  # noqa: BLE001 - BadZipFile, zlib.error, NotImplementedError...
        raise CheckpointError(f"{path}: record {name!r} is damaged ({err}); re-download or "
                              "re-save the file") from None


def _stored_bytes(ref: StorageRef) -> int:
    """Memory for a storage: its bytes, plus the float32 copy of a bfloat16 one."""
    return ref.numel * (6 if ref.dtype == "bf16" else np.dtype(ref.dtype).itemsize)


def _tensor_refs(obj, path: str) -> list[TensorRef]:
    """Every tensor in the unpickled object, found without recursion."""
    refs, stack = [], [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > 100:
            raise CheckpointError(f"{path}: containers nest more than 100 levels deep")
        if isinstance(item, TensorRef):
            refs.append(item)
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return refs


def _check_total(obj, storages: dict, path: str, max_bytes) -> None:
    """Refuse a file whose storages and tensor copies together exceed the memory budget.

    Views may overlap (``expand`` gives stride 0), so a tiny storage can back a huge
    tensor; each tensor is materialised as its own copy, so the copies are counted.
    """
    refs = _tensor_refs(obj, path)
    total = sum(_stored_bytes(ref) for ref in storages.values())
    for ref in refs:
        item = 4 if ref.storage.dtype == "bf16" else np.dtype(ref.storage.dtype).itemsize
        total += int(np.prod(ref.size, dtype=object)) * item
    check_budget(total, f"{path}: {len(refs)} tensors over {len(storages)} storages", max_bytes,
                 CheckpointError)


def _check_size(ref: StorageRef, found: int | None, path: str) -> None:
    need = ref.numel * (2 if ref.dtype == "bf16" else np.dtype(ref.dtype).itemsize)
    if found is None:
        raise CheckpointError(f"{path}: storage {ref.key!r} is missing from the archive")
    if found != need:
        raise CheckpointError(f"{path}: storage {ref.key!r} should hold {ref.numel} elements "
                              f"({need} bytes) but the file has {found} bytes; it is corrupt")


def _as_array(raw: bytes, ref: StorageRef, order: bytes) -> np.ndarray:
    """Raw storage bytes -> 1-D native-order array (bfloat16 widened to float32)."""
    endian = "<" if order == b"little" else ">"
    if ref.dtype == "bf16":
        bits = np.frombuffer(raw, dtype=endian + "u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    array = np.frombuffer(raw, dtype=np.dtype(ref.dtype).newbyteorder(endian))
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _resolve(obj, storages: dict, path: str, depth: int = 0):
    """Replace every TensorRef in ``obj`` by a NumPy array, recursively."""
    if depth > 100:
        raise CheckpointError(f"{path}: containers nest more than 100 levels deep")
    if isinstance(obj, TensorRef):
        return materialise(obj, storages[obj.storage.key], path)
    if isinstance(obj, dict):
        return OrderedDict((k, _resolve(v, storages, path, depth + 1)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, storages, path, depth + 1) for v in obj)
    return obj


def _read_legacy(data: bytes, path: str, max_bytes=None):
    stream = io.BytesIO(data)
    magic, _ = restricted_load(stream, path)
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (bad magic number)")
    version, _ = restricted_load(stream, path)
    if version != LEGACY_PROTOCOL:
        raise CheckpointError(f"{path}: legacy protocol version {version!r} is not supported")
    info, _ = restricted_load(stream, path)
    order = b"little" if isinstance(info, dict) and info.get("little_endian", True) else b"big"
    obj, unpickler = restricted_load(stream, path)
    keys, _ = restricted_load(stream, path)
    if not isinstance(keys, list) or sorted(keys) != sorted(unpickler.storages):
        raise CheckpointError(f"{path}: the storage list does not match the tensors; corrupt file")
    _check_total(obj, unpickler.storages, path, max_bytes)
    storages = {}
    endian = "<" if order == b"little" else ">"
    for key in keys:
        ref = unpickler.storages[key]
        header = stream.read(8)
        if len(header) < 8:
            raise CheckpointError(f"{path}: truncated before storage {key!r}")
        (numel,) = struct.unpack(endian + "q", header)
        if numel != ref.numel:
            raise CheckpointError(f"{path}: storage {key!r} declares {numel} elements, the "
                                  f"tensors expect {ref.numel}; corrupt file")
        size = numel * (2 if ref.dtype == "bf16" else np.dtype(ref.dtype).itemsize)
        raw = stream.read(size)
        _check_size(ref, len(raw), path)
        storages[key] = _as_array(raw, ref, order)
    if stream.read(1):
        raise CheckpointError(f"{path}: unexpected bytes after the last storage")
    return _resolve(obj, storages, path)
