"""Self-describing, atomically written checkpoints in safetensors format.

A checkpoint holds, as tensors, the network's parameters and buffers
(``model.<key>``) and the optimizer's per-parameter state
(``optim.<param>.<slot>``); as JSON metadata, the architecture (so
:func:`load` rebuilds the net with no user code), the preprocessing the net
was trained with (input shape, 0-255 scaling, per-channel mean/std, class
names), the trainer state (epoch, step, position in the epoch, optimizer step
count and hyperparameters, schedule, history, RNG states), the format and
volnet versions, and a SHA-256 verified on load.

What the checksum covers, by format (``format_version``):

* 3 (written since the second trust round): **everything that changes what the
  file computes** -- the whole safetensors header as canonical JSON (every
  metadata entry but the checksum itself: architecture, preprocessing, trainer
  state, and any entry added later; the tensor table: every name, dtype, shape
  and byte range) followed by the tensor bytes. An edit of a stride, an
  activation, a recorded mean or a byte offset is refused like a flipped bit.
* 2: the tensor table and the bytes, not the architecture or preprocessing.
* 1: the tensor bytes only.

Files of formats 1 and 2 still load, with one :class:`UnverifiedCheckpointWarning`
that says what was not verified; ``strict=True`` (or ``volnet --strict-files``,
:func:`strict_files`) refuses them. Their tensors must still be listed in the order
of their byte ranges, as every volnet writer did, which catches an offset swap
behind a downgraded ``format_version``.

The threat model: the checksum catches corruption (disk, transfer, truncation)
and careless edits of a file. It does not authenticate: whoever can edit the
file can recompute the SHA-256, so a checkpoint from someone you do not trust
is only as good as the channel it came by (loading one still runs no code:
nothing is unpickled and only volnet layers are rebuilt).

Writes are atomic: a temporary file in the target directory is written,
flushed and fsynced, then ``os.replace``-d over the target and the directory
fsynced, so a crash leaves either the old file or the new one, never half of
one (:mod:`volnet.io.atomic_file`). A network holding NaN/inf is never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from volnet.errors import CheckpointError, NonFiniteError
from volnet.io import safetensors as st
from volnet.io.architecture import declared_layers, from_json, to_json
from volnet.io.atomic_file import atomic_write
from volnet.limits import check_budget, loads_json

FORMAT_VERSION = 3          # 3: the checksum covers the whole header (2: the tensor table,
                            # 1: the bytes only)
NOT_VERIFIED = {1: "the architecture, the preprocessing, the other metadata and the tensor "
                   "table (names, dtypes, shapes, byte ranges)",
                2: "the architecture, the preprocessing and the other metadata"}
_strict: list[bool] = []    # set by ``volnet --strict-files`` for the duration of a command


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint of an older format loaded: part of it is not covered by its checksum."""


@contextlib.contextmanager
def strict_files(enabled: bool = True):
    """Make :func:`load_checkpoint` refuse older formats inside the block (``--strict-files``).

    Example:
        >>> with strict_files():
        ...     strict_default()
        True
    """
    _strict.append(bool(enabled))
    try:
        yield
    finally:
        _strict.pop()


def strict_default() -> bool:
    """Whether loads that do not say ``strict=`` refuse older checkpoint formats."""
    return bool(_strict and _strict[-1])
LAYER_BYTES = 4096          # memory per rebuilt layer object, beyond its weights (an estimate)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt network and what came with it."""

    net: object
    preprocessing: dict = field(default_factory=dict)
    trainer_state: dict | None = None
    metadata: dict = field(default_factory=dict)


def _tensors(net, trainer) -> dict[str, np.ndarray]:
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    bad = [k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise NonFiniteError(f"refusing to checkpoint a network with NaN/inf in {bad[:5]}; "
                             "the last good checkpoint is kept")
    if trainer is not None:
        for name, slots in trainer.optimizer.state.items():
            for slot, value in slots.items():
                tensors[f"optim.{name}.{slot}"] = value
    return tensors


def _trainer_json(trainer) -> str:
    state = trainer.state_dict()
    opt = state.pop("optimizer")
    # everything but the arrays (those are tensors); an OptimizerGroup adds its "members"
    state["optimizer"] = {**{k: v for k, v in opt.items() if k != "state"},
                          "params": sorted(opt["state"])}
    return json.dumps(state)


def save(path: str | os.PathLike, net, trainer=None, preprocessing: dict | None = None,
         overwrite: bool = True) -> str:
    """Write ``net`` (and, given a Trainer, everything to resume it) to ``path`` atomically.

    Args:
        path: destination, conventionally ``*.safetensors``.
        net: the network.
        trainer: a :class:`volnet.train.Trainer` whose optimizer, counters and
            RNG states are saved too (needed for ``--resume``).
        preprocessing: {"input_shape", "mean", "std", "class_names", ...};
            defaults to ``trainer.metadata["preprocessing"]``, then to
            ``net.preprocessing`` (set by ``vn.fit``, ``Trainer.fit`` and ``vn.load``).
        overwrite: False raises if ``path`` exists.

    Returns:
        The path written.

    Example:
        >>> import tempfile, os
        >>> from volnet.models import lenet5
        >>> path = os.path.join(tempfile.mkdtemp(), "lenet.safetensors")
        >>> _ = save(path, lenet5(), preprocessing={"input_shape": [1, 28, 28]})
        >>> load(path).output_shape((1, 28, 28))
        (10,)
    """
    from volnet import __version__

    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise CheckpointError(f"{path} exists; choose another --out path or delete it first")
    if preprocessing is None and trainer is not None:
        preprocessing = trainer.metadata.get("preprocessing")
    if preprocessing is None:
        preprocessing = getattr(net, "preprocessing", None)
    tensors = _tensors(net, trainer)
    metadata = {"format": "volnet-checkpoint", "format_version": str(FORMAT_VERSION),
                "volnet_version": __version__, "architecture": to_json(net),
                "preprocessing": json.dumps(preprocessing or {})}
    if trainer is not None:
        metadata["trainer"] = _trainer_json(trainer)
    atomic_write(path, sealed(tensors, metadata))
    return path


def sealed(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors bytes of ``tensors`` and ``metadata`` with the format-3 checksum added
    (``metadata["sha256"]``, over the whole header and the bytes; see :func:`checksum`)."""
    unsealed = st.serialize(tensors, {k: v for k, v in metadata.items() if k != "sha256"})
    n = int.from_bytes(unsealed[:8], "little")
    digest = checksum(json.loads(unsealed[8:8 + n]), memoryview(unsealed)[8 + n:])
    return st.serialize(tensors, {**metadata, "sha256": digest})


def checksum(header: dict, data) -> str:
    """Format-3 SHA-256: the whole header (tensor table and every metadata entry except
    ``sha256`` itself) as canonical JSON -- sorted keys, no spaces, ASCII -- then the bytes.

    Canonical JSON makes the digest a function of what the header *says*, not of how it
    is spelled, so any metadata entry a later volnet adds is covered with no change here.
    """
    doc = {k: v for k, v in header.items() if k != "__metadata__"}
    doc["__metadata__"] = {k: v for k, v in (header.get("__metadata__") or {}).items()
                           if k != "sha256"}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=True).encode("ascii"))
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def table_sha256(header: dict, data) -> str:
    """Format-2 SHA-256: the tensor table (sorted names with dtype, shape, byte range), then
    the bytes; the metadata is not covered."""
    table = sorted([name, info["dtype"], info["shape"], info["data_offsets"]]
                   for name, info in header.items() if name != "__metadata__")
    digest = hashlib.sha256(json.dumps(table, separators=(",", ":")).encode("utf-8"))
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _check_metadata(path: str, metadata: dict, header: dict, data, strict: bool) -> None:
    """Refuse a file that is not a checkpoint, is of a newer format, or fails its checksum;
    warn once (or, ``strict``, refuse) when its format leaves part of it unverified."""
    if metadata.get("format") != "volnet-checkpoint":
        raise CheckpointError(f"{path} is a safetensors file but not a volnet checkpoint "
                              "(no architecture); load its weights with "
                              "volnet.io.safetensors.load_file and net.load_state_dict")
    version = metadata.get("format_version", "")
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not a format version "
                              f"(1 to {FORMAT_VERSION}); the file is corrupt or was edited")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this volnet "
                              f"reads ({FORMAT_VERSION}); upgrade volnet")
    version = int(version)
    if version == 3:
        recorded, found, what = metadata.get("sha256"), checksum(header, data), \
            "header (architecture, preprocessing, metadata, tensor table) or data"
    elif version == 2:
        recorded, found, what = metadata.get("sha256"), table_sha256(header, data), \
            "tensor table or data"
    else:
        recorded, found, what = metadata.get("tensor_sha256"), hashlib.sha256(data).hexdigest(), \
            "tensor data"
    if recorded != found:
        raise CheckpointError(f"{path}: checksum mismatch: the {what} does not match the "
                              "SHA-256 recorded when it was saved (corrupt or modified file)")
    if version == FORMAT_VERSION:
        return
    _check_writer_order(path, header)
    if strict:
        raise CheckpointError(f"{path}: checkpoint format {version} does not verify "
                              f"{NOT_VERIFIED[version]}; refused because strict loading is on "
                              "(strict=True or volnet --strict-files). If you trust the file, "
                              "load it without strict and re-save it (vn.save) to upgrade it")
    warnings.warn(f"{path}: checkpoint format {version} loaded, but its checksum does not "
                  f"cover {NOT_VERIFIED[version]}: an edit there would go unnoticed. Re-save it "
                  f"with vn.save to upgrade it to format {FORMAT_VERSION}",
                  UnverifiedCheckpointWarning, stacklevel=4)


def _check_writer_order(path: str, header: dict) -> None:
    """Every volnet writer listed tensors in the order of their byte ranges; an older-format
    file that does not (two offsets swapped behind a downgraded version) was edited."""
    begins = [info.get("data_offsets", [0])[0] for name, info in header.items()
              if name != "__metadata__" and isinstance(info, dict)]
    if begins != sorted(begins):
        raise CheckpointError(f"{path}: the tensor table lists byte ranges out of order, which "
                              "no volnet writer does; the file was edited (and its format "
                              "does not checksum the table)")


def _check_declared_size(path: str, arch: str, stored: int, itemsize: int, max_bytes) -> None:
    """Refuse an architecture that would allocate more weights than the file holds, or more
    memory than the budget, counting every layer in it before any is built."""
    doc = loads_json(arch, f"{path}: architecture JSON", CheckpointError)
    if not isinstance(doc, dict) or "net" not in doc:
        return   # from_json reports malformed architectures
    declared, layers = declared_layers(doc["net"])
    if declared > stored:
        raise CheckpointError(f"{path}: the architecture declares {declared:,} weights but the "
                              f"file holds {stored:,}; the checkpoint is forged or corrupt")
    # weights are drawn in float64 before the cast, then replaced by the file's
    check_budget(declared * (itemsize + 8) + layers * LAYER_BYTES,
                 f"{path}: rebuilding {layers:,} layers with {declared:,} weights", max_bytes,
                 CheckpointError)


def _check_dtypes(path: str, net, model: dict) -> None:
    """Each stored tensor must be of the kind (float, int, bool) the network holds there: an
    edited table cannot turn float32 weights into int32 bit patterns. (Float widths may
    differ: imported graphs keep float32 constants in a float64 net.)"""
    expected = net.state_dict()
    for key, value in model.items():
        if key in expected and value.dtype.kind != expected[key].dtype.kind:
            raise CheckpointError(f"{path}: tensor model.{key} is stored as {value.dtype} but "
                                  f"the network holds {expected[key].dtype}; the tensor table "
                                  "was edited or the file is corrupt")


def _json(path, metadata, key, default):
    if key not in metadata:
        return default
    return loads_json(metadata[key], f"{path}: metadata {key!r}", CheckpointError)


def verified_tensors(path: str | os.PathLike, max_bytes: int | str | None = None,
                     strict: bool | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of the checkpoint at ``path`` once its checksum checks out.

    The bytes are read once; the checksum is computed on the very bytes decoded.
    ``strict`` (default: :func:`strict_default`) refuses formats older than 3.
    """
    path = os.fspath(path)
    if path.lower().endswith(".onnx") and os.path.isfile(path):
        raise CheckpointError(
            f"{path} is an ONNX file, not a volnet checkpoint: convert it once with `volnet "
            f"import {path}` (writes {os.path.splitext(path)[0]}.safetensors, which predict, "
            "evaluate and slide take), or read it in Python with vn.io.load_onnx")
    blob = st.read_file(path, max_bytes)
    with st.naming_errors(path):
        tensors, metadata = st.deserialize(blob, max_bytes=max_bytes)
    n = int.from_bytes(blob[:8], "little")
    header = loads_json(blob[8:8 + n], f"{path}: safetensors header", CheckpointError)
    _check_metadata(path, metadata, header, memoryview(blob)[8 + n:],
                    strict_default() if strict is None else strict)
    return tensors, metadata


def load_checkpoint(path: str | os.PathLike, max_bytes: int | str | None = None,
                    strict: bool | None = None) -> Checkpoint:
    """Read, verify and rebuild: the network with its weights plus all saved state.

    Args:
        path: the checkpoint.
        max_bytes: the memory budget for the file and the rebuilt network (default
            ``$VOLNET_MAX_BYTES`` or 2 GiB; see :mod:`volnet.limits`).
        strict: refuse files of formats older than :data:`FORMAT_VERSION`, whose
            checksum leaves the architecture and metadata unverified (default: on
            inside :func:`strict_files` / ``volnet --strict-files``, else off: such a
            file loads with one :class:`UnverifiedCheckpointWarning`).
    """
    path = os.fspath(path)
    tensors, metadata = verified_tensors(path, max_bytes, strict)
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    dtype = next((v.dtype for v in model.values() if v.dtype.kind == "f"), np.dtype(np.float32))
    arch = metadata.get("architecture", "")
    _check_declared_size(path, arch, sum(v.size for v in model.values()), dtype.itemsize,
                         max_bytes)
    net = from_json(arch, dtype=dtype)
    _check_dtypes(path, net, model)
    net.load_state_dict(model)
    trainer_state = _json(path, metadata, "trainer", None)
    if trainer_state is not None:
        if not (isinstance(trainer_state, dict) and isinstance(trainer_state.get("optimizer"), dict)):
            raise CheckpointError(f"{path}: metadata 'trainer' must be an object with an "
                                  "'optimizer' object; the checkpoint is corrupt")
        opt = trainer_state["optimizer"]
        opt["state"] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                name, _, slot = key[len("optim."):].rpartition(".")
                opt["state"].setdefault(name, {})[slot] = value
        opt.pop("params", None)
    return Checkpoint(net, _json(path, metadata, "preprocessing", {}), trainer_state, metadata)


def load(path: str | os.PathLike, strict: bool | None = None):
    """Rebuild the network saved at ``path`` (architecture, weights, buffers).

    The returned net carries ``net.preprocessing`` (input shape, mean/std,
    class names) so evaluation and prediction feed it what it was trained on.
    ``strict=True`` refuses checkpoints of older formats (see :func:`load_checkpoint`).
    """
    ckpt = load_checkpoint(path, strict=strict)
    ckpt.net.preprocessing = ckpt.preprocessing
    return ckpt.net


def resume(trainer, path: str | os.PathLike) -> Checkpoint:
    """Load weights and the full trainer state from ``path`` into ``trainer``."""
    ckpt = load_checkpoint(path)
    if ckpt.trainer_state is None:
        raise CheckpointError(f"{path} holds weights only (saved without a trainer); it cannot "
                              "resume training. Start a new run instead")
    trainer.net.load_state_dict(ckpt.net.state_dict())
    trainer.load_state_dict(ckpt.trainer_state)
    return ckpt
