"""An allow-listed unpickler for the pickles inside PyTorch checkpoint files.

``torch.save`` writes a pickle that names a few PyTorch functions and classes
(``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``,
``collections.OrderedDict``). A plain ``pickle.load`` would import and call
whatever a file names, so a forged file can run any code (``os.system``).
Here ``find_class`` is the only door to Python globals, and it hands out
*local stand-ins* for the allowed names: nothing from torch (or anywhere
else) is ever imported or called. Any other name raises
:class:`UnsafePickleError` before anything runs.

Tensors come out as :class:`TensorRef` placeholders that remember their
storage key, offset, size and stride; the container reader (``torch_load``)
fetches the storage bytes, checks their sizes and materialises NumPy arrays.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings
from collections import OrderedDict

import numpy as np

from volnet.errors import CheckpointError

# A tensor may hold more elements than its storage only by overlapping views (expand);
# beyond this many, a tiny file could make us allocate gigabytes.
MAX_VIEW_ELEMENTS = 1 << 24


class UnsafePickleError(CheckpointError):
    """The file's pickle asked for a Python global outside the allow-list."""


# torch storage class -> NumPy dtype string ("bf16" is widened to float32 later).
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16",
}


class StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only its dtype is kept."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str) -> None:
        self.name, self.dtype = name, STORAGE_DTYPES[name]

    def __setstate__(self, state):
        raise CheckpointError(f"malformed pickle: state assigned to storage type {self.name}")


class StorageRef:
    """A storage named by a checkpoint: its key in the file, dtype and element count."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, key: str, dtype: str, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel

    def __setstate__(self, state):
        raise CheckpointError(f"malformed pickle: state assigned to storage {self.key!r}")


class TensorRef:
    """A tensor as a view (offset, size, stride in elements) of a :class:`StorageRef`."""

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage, offset, size, stride) -> None:
        if not isinstance(storage, StorageRef):
            raise CheckpointError("malformed pickle: a tensor refers to something that is not "
                                  f"a storage ({type(storage).__name__})")
        if not _is_int(offset) or offset < 0:
            raise CheckpointError(f"malformed pickle: storage offset {offset!r} is not an int >= 0")
        for what, dims in (("size", size), ("stride", stride)):
            if not isinstance(dims, tuple) or not all(_is_int(d) and d >= 0 for d in dims):
                raise CheckpointError(f"malformed pickle: tensor {what} {dims!r} is not a tuple "
                                      "of ints >= 0")
        if len(size) != len(stride):
            raise CheckpointError(f"malformed pickle: tensor size {size} and stride {stride} "
                                  "have different lengths")
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):
        raise CheckpointError("malformed pickle: state assigned to a tensor")


class StateDict(OrderedDict):
    """``collections.OrderedDict`` stand-in; accepts only torch's ``_metadata`` attribute."""

    def __setstate__(self, state):
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise CheckpointError("malformed pickle: unexpected state assigned to an OrderedDict")
        self._metadata = state.get("_metadata")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    # Hooks would be Python callables, which the allow-list cannot produce; an
    # empty OrderedDict is what torch writes.
    if backward_hooks:
        raise CheckpointError("malformed pickle: tensor with backward hooks")
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, TensorRef):
        raise CheckpointError("malformed pickle: a parameter wraps something that is not a tensor")
    return data


def _torch_size(dims=()):
    return tuple(dims)


# The whole allow-list: (module, name) -> local stand-in. Nothing else resolves.
ALLOWED = {
    ("collections", "OrderedDict"): StateDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _torch_size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
ALLOWED.update({("torch", name): StorageType(name) for name in STORAGE_DTYPES})


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; storages become :class:`StorageRef`."""

    def __init__(self, file, what: str) -> None:
        super().__init__(file)
        self.what = what
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module, name):
        stand_in = ALLOWED.get((module, name))
        if stand_in is None:
            raise UnsafePickleError(
                f"refused to load {self.what}: its pickle asks for the Python global "
                f"'{module}.{name}', and loading it would run code. Nothing from the file was "
                "executed. volnet loads only tensors, storages, ordered dicts and plain "
                "containers; if you trust the file, re-save it with "
                "torch.save(model.state_dict(), path) or convert it to .safetensors.")
        return stand_in

    def persistent_load(self, pid):
        # torch writes ("storage", storage_type, key, location, numel[, view_metadata]).
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointError(f"malformed pickle in {self.what}: unknown persistent id {pid!r}")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"malformed pickle in {self.what}: storage type {storage_type!r}")
        if not (isinstance(key, str) and key.isascii() and key.isalnum()):
            raise CheckpointError(f"malformed pickle in {self.what}: storage key {key!r}")
        if not isinstance(location, str) or not _is_int(numel) or numel < 0:
            raise CheckpointError(f"malformed pickle in {self.what}: storage {key!r} has location "
                                  f"{location!r} and element count {numel!r}")
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError(f"{self.what}: storage views (legacy format) are not supported")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(key, storage_type.dtype, numel)
        elif (ref.dtype, ref.numel) != (storage_type.dtype, numel):
            raise CheckpointError(f"{self.what}: storage {key!r} declared twice with different "
                                  "types or sizes")
        return ref


def restricted_load(data: bytes | io.BufferedIOBase, what: str):
    """Unpickle one pickle from ``data`` through the allow-list.

    Returns:
        (object, unpickler): the object (tensors as :class:`TensorRef`) and the
        unpickler, whose ``storages`` maps keys to :class:`StorageRef`.

    Raises:
        UnsafePickleError: a global outside the allow-list was named.
        CheckpointError: the pickle is truncated or malformed.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    _check_lengths(stream, what)
    unpickler = RestrictedUnpickler(stream, what)
    try:
        obj = unpickler.load()
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{what}: pickle nests too deeply; the file is corrupt") from None
    except Exception as err:  # noqa: BLE001 - any failure of a hostile or damaged stream
        raise CheckpointError(f"{what}: corrupt or truncated pickle ({type(err).__name__}: "
                              f"{err}); re-download or re-save the file") from None
    return obj, unpickler


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_lengths(stream, what: str) -> None:
    """Walk the pickle's opcodes (without running them) up to STOP, then rewind.

    CPython's unpickler allocates the length a BINBYTES/BINUNICODE/LONG4 opcode
    declares *before* reading it, so a 12-byte pickle can make it allocate 2 GiB;
    ``pickletools`` reads counted arguments from the stream and fails on a short
    one, so every declared length is checked against the bytes really present.
    Memo indices must not exceed the opcodes seen so far (the unpickler sizes its
    memo table by the largest index).
    """
    start = stream.tell()
    try:
        with warnings.catch_warnings():   # pickletools warns on bad escapes in STRING opcodes
            warnings.simplefilter("ignore", DeprecationWarning)
            for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
                # the C unpickler grows its memo table to the index a PUT names: one
                # LONG_BINPUT 2**28 costs 4 GiB. Picklers number memo entries from 0.
                if opcode.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= count):
                    raise ValueError(f"memo index {arg!r} at opcode {count}")
    except Exception as err:  # noqa: BLE001 - any failure of a hostile or damaged stream
        raise CheckpointError(f"{what}: corrupt or truncated pickle ({type(err).__name__}: "
                              f"{err}); re-download or re-save the file") from None
    stream.seek(start)


def materialise(ref: TensorRef, storage: np.ndarray, what: str) -> np.ndarray:
    """A C-contiguous copy of the view ``ref`` of ``storage`` (checked to stay inside it)."""
    numel = int(np.prod(ref.size, dtype=object))
    if numel == 0:
        try:
            return np.zeros(ref.size, dtype=storage.dtype)
        except ValueError:   # e.g. (0, 2**62): no elements, but no shape NumPy can hold
            raise CheckpointError(f"{what}: tensor size {ref.size} cannot be represented; the "
                                  "file is corrupt") from None
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= storage.size:
        raise CheckpointError(f"{what}: tensor of size {ref.size} (stride {ref.stride}, offset "
                              f"{ref.offset}) reaches element {last} of storage {ref.storage.key!r} "
                              f"which holds {storage.size}; the file is corrupt")
    # Zero or overlapping strides (expanded tensors) could declare huge sizes over a tiny storage.
    if numel > max(storage.size, MAX_VIEW_ELEMENTS):
        raise CheckpointError(f"{what}: tensor of size {ref.size} is far larger than its storage "
                              f"({storage.size} elements); refusing to allocate it")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset:], shape=ref.size, strides=tuple(s * item for s in ref.stride),
        writeable=False)
    return np.array(view, order="C")   # a copy; ascontiguousarray would make 0-d arrays 1-d
