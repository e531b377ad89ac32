"""Keeping replicas equal: gradients averaged over all ranks in a few large buckets, and
rank 0's weights copied to every rank. ``train/distributed.py`` tells the whole story."""

from __future__ import annotations

import time

import numpy as np

from volnet.errors import ConfigError
from volnet.train.communicator import Communicator, DistributedError


class GradientAllreducer:
    """Average a network's gradients over all ranks, a few large buckets at a time.

    Gradients are packed (in parameter order, grouped by dtype) into contiguous
    buffers of about ``bucket_mb`` megabytes, each summed with one non-blocking
    allreduce (all buckets in flight together), scaled by 1/W and unpacked into
    the gradient arrays in place. With each rank's loss a mean over its local
    batch (all local batches equal), the result is the gradient of the mean over
    the global batch. Call it between ``backward`` and the optimizer step, or pass
    it as ``Trainer(grad_hook=...)``. Communication does not overlap backward:
    volnet's backward is one call, so buckets are sent once it returns.

    Given ``net``, its floating buffers (batch-norm running statistics) ride in
    the same buckets and are averaged too, so with local batch norm every
    replica still evaluates identically and callbacks that watch validation
    metrics (early stopping, plateau schedules) decide the same on every rank.
    Averaging the running mean each step equals a running mean of the global
    batch means; the running variance misses only the spread between ranks'
    means. With synchronised batch norm they are equal already and stay so.

    Args:
        comm: the communicator (a world of one makes this a no-op).
        bucket_mb: target bucket size in megabytes. Default 25, as PyTorch DDP.
        net: the network whose floating buffers to average as well (optional).

    Example:
        >>> reducer = GradientAllreducer(Communicator())
        >>> reducer(vn.Linear(3, 2))   # a world of one leaves the gradients as they are
        >>> reducer.collectives
        0
    """

    def __init__(self, comm: Communicator, bucket_mb: float = 25.0, net=None) -> None:
        if not bucket_mb > 0:
            raise ConfigError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.comm, self.net = comm, net
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self._key = None
        self.buckets: list[tuple[np.ndarray, list[tuple[str, int, int]]]] = []
        self.steps = 0              # calls that communicated
        self.collectives = 0        # allreduce calls issued (buckets x steps)
        self.seconds = 0.0          # wall time spent packing, reducing and unpacking

    @property
    def bytes_per_step(self) -> int:
        """Bytes (gradients and buffers) each rank sends into the allreduce per step."""
        return sum(buf.nbytes for buf, _ in self.buckets)

    def __call__(self, grads_of) -> None:
        """Average in place the gradients of ``grads_of``: a network, or (name, grad) pairs
        (what ``Trainer(grad_hook=...)`` passes)."""
        if self.comm.world_size == 1:
            return
        start = time.perf_counter()
        pairs = ([(n, g) for n, _, g in grads_of.named_params(trainable_only=True)]
                 if hasattr(grads_of, "named_params") else grads_of)
        grads = {name: grad for name, grad in pairs if grad is not None}
        grads.update(self._buffers())
        self._ensure_layout(grads)
        for buf, slots in self.buckets:
            for name, lo, hi in slots:
                buf[lo:hi] = grads[name].ravel()
        self.comm.allreduce_([buf for buf, _ in self.buckets], "gradient allreduce")
        scale = 1.0 / self.comm.world_size
        for buf, slots in self.buckets:
            buf *= buf.dtype.type(scale)
            for name, lo, hi in slots:
                grads[name][...] = buf[lo:hi].reshape(grads[name].shape)
        self.steps += 1
        self.collectives += len(self.buckets)
        self.seconds += time.perf_counter() - start

    def _buffers(self) -> dict[str, np.ndarray]:
        if self.net is None:
            return {}
        return {f"buffer:{path}.{name}": value for path, layer in self.net.named_layers()
                for name, value in layer.buffers.items() if value.dtype.kind == "f"}

    def _ensure_layout(self, grads: dict[str, np.ndarray]) -> None:
        key = [[name, list(g.shape), g.dtype.str] for name, g in grads.items()]   # JSON-shaped
        if key == self._key:
            return
        # Ranks whose gradients differ would sum unrelated numbers or deadlock: check once.
        if self.comm.broadcast_json(key) != key:
            raise DistributedError(
                f"rank {self.comm.rank}: the network's trainable parameters differ from rank 0's; "
                "every rank must build the same model and freeze the same layers")
        self._key, self.buckets = key, []
        for dtype in dict.fromkeys(g.dtype for g in grads.values()):
            slots, size = [], 0
            for name, g in grads.items():
                if g.dtype != dtype:
                    continue
                if slots and (size + g.size) * dtype.itemsize > self.bucket_bytes:
                    self.buckets.append((np.empty(size, dtype), slots))
                    slots, size = [], 0
                slots.append((name, size, size + g.size))
                size += g.size
            self.buckets.append((np.empty(size, dtype), slots))


def broadcast_model(model, comm: Communicator, root: int = 0) -> None:
    """Copy rank ``root``'s parameters and buffers into every rank's network, in place.

    Call once before training (and after rank ``root`` alone loads a checkpoint)
    so every replica starts from the same weights.
    """
    if comm.world_size == 1:
        return
    arrays = []
    for _, layer in model.named_layers():
        for store in (layer.params, layer.buffers):
            for name, value in store.items():
                if not (value.flags.c_contiguous and value.flags.writeable):
                    store[name] = value = np.ascontiguousarray(value).copy()
                arrays.append(value)
    comm.broadcast_(arrays, root, "broadcast of the initial weights")
