"""Self-describing, atomically written checkpoints in safetensors format.

A checkpoint holds, as tensors, the network's parameters and buffers
(``model.<key>``) and the optimizer's per-parameter state
(``optim.<param>.<slot>``); as JSON metadata, the architecture (so
:func:`load` rebuilds the net with no user code), the preprocessing the net
was trained with (input shape, 0-255 scaling, per-channel mean/std, class
names), the trainer state (epoch, step, position in the epoch, optimizer step
count and hyperparameters, schedule, history, RNG states), the format and
volnet versions, and a SHA-256 verified on load. Since format 2 that checksum
covers the tensor table (every name, dtype, shape and byte range) as well as
the tensor bytes, so an edit of a dtype or a shape in the header is caught
like a flipped byte; format-1 files (bytes only) still load, and for every
format each tensor's dtype must be the one the rebuilt network holds.

Writes are atomic: a temporary file in the target directory is written,
flushed and fsynced, then ``os.replace``-d over the target and the directory
fsynced, so a crash leaves either the old file or the new one, never half of
one. The temporary file is named after the target and the writing process
(``.<name>.<pid>-<random>.part``); one left by a killed process is removed by
the next save to the same path. A network holding NaN/inf is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

from volnet.errors import CheckpointError, NonFiniteError
from volnet.io import safetensors as st
from volnet.io.architecture import declared_layers, from_json, to_json
from volnet.io.atomic_file import _umask, atomic_write, remove_stale_parts  # noqa: F401
from volnet.limits import check_budget, loads_json

FORMAT_VERSION = 2          # 2: the checksum covers the tensor table too (1: the bytes only)
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
    body = st.serialize(tensors)
    n = int.from_bytes(body[:8], "little")
    metadata = {"format": "volnet-checkpoint", "format_version": str(FORMAT_VERSION),
                "volnet_version": __version__, "architecture": to_json(net),
                "preprocessing": json.dumps(preprocessing or {}),
                "sha256": table_sha256(json.loads(body[8:8 + n]), body[8 + n:])}
    if trainer is not None:
        metadata["trainer"] = _trainer_json(trainer)
    atomic_write(path, st.serialize(tensors, metadata))
    return path


def table_sha256(header: dict, data: bytes) -> str:
    """SHA-256 over the tensor table (sorted names with dtype, shape, byte range) and bytes."""
    table = sorted([name, info["dtype"], info["shape"], info["data_offsets"]]
                   for name, info in header.items() if name != "__metadata__")
    digest = hashlib.sha256(json.dumps(table, separators=(",", ":")).encode("utf-8"))
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def _checksums(path: str) -> tuple[str, str]:
    """(SHA-256 of table and bytes, SHA-256 of the bytes alone) of a validated file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = loads_json(f.read(n), f"{path}: safetensors header", CheckpointError)
        data = f.read()
    return table_sha256(header, data), hashlib.sha256(data).hexdigest()


def _check_metadata(path: str, metadata: dict, sums: tuple[str, str]) -> None:
    if metadata.get("format") != "volnet-checkpoint":
        raise CheckpointError(f"{path} is a safetensors file but not a volnet checkpoint "
                              "(no architecture); load its weights with "
                              "volnet.io.safetensors.load_file and net.load_state_dict")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this volnet "
                              f"reads ({FORMAT_VERSION}); upgrade volnet")
    if int(version) >= 2:
        recorded, found, what = metadata.get("sha256"), sums[0], "tensor table or data"
    else:   # format 1 recorded the bytes only
        recorded, found, what = metadata.get("tensor_sha256"), sums[1], "tensor data"
    if recorded != found:
        raise CheckpointError(f"{path}: checksum mismatch: the {what} does not match the "
                              "SHA-256 recorded when it was saved (corrupt or modified file)")


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


def load_checkpoint(path: str | os.PathLike, max_bytes: int | str | None = None) -> Checkpoint:
    """Read, verify and rebuild: the network with its weights plus all saved state.

    ``max_bytes`` is the memory budget for the file and the rebuilt network (default
    ``$VOLNET_MAX_BYTES`` or 2 GiB; see :mod:`volnet.limits`).
    """
    path = os.fspath(path)
    tensors, metadata = st.load_file(path, max_bytes=max_bytes)
    _check_metadata(path, metadata, _checksums(path))   # hashes the bytes that were validated
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


def load(path: str | os.PathLike):
    """Rebuild the network saved at ``path`` (architecture, weights, buffers).

    The returned net carries ``net.preprocessing`` (input shape, mean/std,
    class names) so evaluation and prediction feed it what it was trained on.
    """
    ckpt = load_checkpoint(path)
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
