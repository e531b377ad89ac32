"""Self-describing, atomically written checkpoints in safetensors format.

A checkpoint holds, as tensors, the network's parameters and buffers
(``model.<key>``) and the optimizer's per-parameter state
(``optim.<param>.<slot>``); as JSON metadata, the architecture (so
:func:`load` rebuilds the net with no user code), the preprocessing the net
was trained with (input shape, 0-255 scaling, per-channel mean/std, class
names), the trainer state (epoch, step, position in the epoch, optimizer step
count and hyperparameters, schedule, history, RNG states), the format and
volnet versions, and a SHA-256 of the tensor bytes, verified on load.

Writes are atomic: a temporary file in the target directory is written,
flushed and fsynced, then ``os.replace``-d over the target and the directory
fsynced, so a crash leaves either the old file or the new one, never half of
one. A network holding NaN/inf is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from volnet.errors import CheckpointError, NonFiniteError
from volnet.io import safetensors as st
from volnet.io.architecture import declared_size, from_json, to_json

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt network and what came with it."""

    net: object
    preprocessing: dict = field(default_factory=dict)
    trainer_state: dict | None = None
    metadata: dict = field(default_factory=dict)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be saving)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a mix."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:   # make the rename itself durable; not every platform lets us open a directory
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


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
    state["optimizer"] = {"type": opt["type"], "hyper": opt["hyper"], "t": opt["t"],
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
    metadata = {"format": "volnet-checkpoint", "format_version": str(FORMAT_VERSION),
                "volnet_version": __version__, "architecture": to_json(net),
                "preprocessing": json.dumps(preprocessing or {}),
                "tensor_sha256": hashlib.sha256(body[8 + int.from_bytes(body[:8], "little"):]).hexdigest()}
    if trainer is not None:
        metadata["trainer"] = _trainer_json(trainer)
    atomic_write(path, st.serialize(tensors, metadata))
    return path


def _check_metadata(path: str, metadata: dict, blob_sha: str) -> None:
    if metadata.get("format") != "volnet-checkpoint":
        raise CheckpointError(f"{path} is a safetensors file but not a volnet checkpoint "
                              "(no architecture); load its weights with "
                              "volnet.io.safetensors.load_file and net.load_state_dict")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r} is newer than this volnet "
                              f"reads ({FORMAT_VERSION}); upgrade volnet")
    if metadata.get("tensor_sha256") != blob_sha:
        raise CheckpointError(f"{path}: checksum mismatch: the tensor data does not match the "
                              "SHA-256 recorded when it was saved (corrupt or modified file)")


def _check_declared_size(path: str, arch: str, stored: int) -> None:
    """Refuse an architecture that would allocate more weights than the file holds."""
    try:
        declared = declared_size(json.loads(arch)["net"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return   # from_json reports malformed architectures
    if declared > stored:
        raise CheckpointError(f"{path}: the architecture declares {declared:,} weights but the "
                              f"file holds {stored:,}; the checkpoint is forged or corrupt")


def _json(path, metadata, key, default):
    try:
        return json.loads(metadata[key]) if key in metadata else default
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON: {err}") from None


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read, verify and rebuild: the network with its weights plus all saved state."""
    path = os.fspath(path)
    tensors, metadata = st.load_file(path)
    with open(path, "rb") as f:   # hash exactly the tensor bytes that were validated
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        blob_sha = hashlib.sha256(f.read()).hexdigest()
    _check_metadata(path, metadata, blob_sha)
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    dtype = next((v.dtype for v in model.values() if v.dtype.kind == "f"), np.float32)
    arch = metadata.get("architecture", "")
    _check_declared_size(path, arch, sum(v.size for v in model.values()))
    net = from_json(arch, dtype=dtype)
    net.load_state_dict(model)
    trainer_state = _json(path, metadata, "trainer", None)
    if trainer_state is not None:
        opt = trainer_state["optimizer"]
        opt["state"] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                name, slot = key[len("optim."):].rsplit(".", 1)
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
