"""Keeping replicas equal: gradients averaged over all ranks in buckets that go out while
backward still runs, and rank 0's weights copied to every rank.
``train/data_parallel.py`` tells the whole story."""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

import numpy as np

from volnet.errors import ConfigError
from volnet.layers.base import join_key
from volnet.train.communicator import Communicator, DistributedError


class Bucket:
    """One contiguous buffer (``buf``), the gradients packed into it (``slots``: name, start,
    end) and its state within a step."""

    def __init__(self, dtype, slots: list[tuple[str, int, int]]) -> None:
        self.slots = slots                               # (name, lo, hi) in the buffer
        self.buf = np.empty(slots[-1][2] if slots else 0, dtype)
        self.missing: set[str] = set()                   # names not copied in this step
        self.request = None                              # the in-flight allreduce
        self.started = False
        self.stale = False                               # a gradient changed after the start
        self.reset()

    def reset(self) -> None:
        self.missing = {name for name, _, _ in self.slots}
        self.request, self.started, self.stale = None, False, False


class GradientAllreducer:
    """Average a network's gradients over all ranks, a bucket at a time, overlapping backward.

    Gradients are packed into contiguous buffers of about ``bucket_mb`` megabytes,
    each summed over the ranks with one non-blocking allreduce, scaled by 1/W and
    unpacked into the gradient arrays in place. With each rank's loss a mean over
    its local batch (all local batches equal), the result is the gradient of the
    mean over the global batch. Call it between ``backward`` and the optimizer
    step, or pass it as ``Trainer(grad_hook=...)``.

    **Overlap** (default, given ``net``): the reducer registers a backward hook
    (:mod:`volnet.layers.hooks`) on every layer that owns parameters. Buckets hold
    the gradients in the order they became ready in the first step (the reverse
    of the forward pass); when a layer's backward has written its gradients, they
    are copied into their bucket, and a bucket whose gradients are all in starts
    its allreduce at once while backward goes on with the layers before it. The
    call after backward then packs whatever no hook delivered (layers whose
    backward was skipped), starts the remaining buckets, waits only for what is
    still in flight, and unpacks. Buckets always start in the same order (bucket
    i after bucket i-1) on every rank, as MPI requires of collectives. The first
    step, and any step after the trainable parameters changed (a layer frozen),
    reduces everything after backward, as without overlap. While attached, every
    backward of ``net`` on one rank must be matched on every rank (as with
    PyTorch DDP); :meth:`close` detaches the hooks, :meth:`no_sync` holds the
    sends for micro-batches that only accumulate.

    Given ``net``, its floating buffers (batch-norm running statistics) ride in
    buckets of their own, sent after backward, so with local batch norm every
    replica still evaluates identically and callbacks that watch validation
    metrics (early stopping, plateau schedules) decide the same on every rank.
    Averaging the running mean each step equals a running mean of the global
    batch means; the running variance misses only the spread between ranks'
    means. With synchronised batch norm they are equal already and stay so.

    Args:
        comm: the communicator (a world of one makes this a no-op).
        bucket_mb: target bucket size in megabytes. Default 25, as PyTorch DDP.
        net: the network whose floating buffers to average as well, and whose
            layers' backward hooks start the buckets early (optional).
        overlap: start buckets during backward (needs ``net``). False sends every
            bucket after backward returns.

    Example:
        >>> reducer = GradientAllreducer(Communicator())
        >>> reducer(vn.Linear(3, 2))   # a world of one leaves the gradients as they are
        >>> reducer.collectives
        0
    """

    def __init__(self, comm: Communicator, bucket_mb: float = 25.0, net=None,
                 overlap: bool = True) -> None:
        if not bucket_mb > 0:
            raise ConfigError(f"bucket_mb must be > 0, got {bucket_mb}")
        self.comm, self.net = comm, net
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.overlap = bool(overlap) and net is not None and comm.world_size > 1
        self._key = None
        self.buckets: list[Bucket] = []
        self._where: dict[str, tuple[Bucket, int, int]] = {}   # name -> bucket, lo, hi
        self._order: dict[str, None] = {}     # names in the order their gradients got ready
        self._next = 0                        # index of the next bucket to start
        self._holding = False
        self._handles = []
        self.steps = 0              # calls that communicated
        self.collectives = 0        # allreduce calls issued (buckets x steps)
        self.early = 0              # of those, started by a hook while backward ran
        self.seconds = 0.0          # wall time in the reducer: hooks plus the call after backward
        self.wait_seconds = 0.0     # of that, the call after backward (packing, waiting, unpacking)
        if self.overlap:
            for path, layer in net.named_layers():
                if layer.params:
                    self._handles.append(layer.register_backward_hook(
                        functools.partial(self._gradients_ready, path)))

    @property
    def bytes_per_step(self) -> int:
        """Bytes (gradients and buffers) each rank sends into the allreduce per step."""
        return sum(b.buf.nbytes for b in self.buckets)

    def close(self) -> None:
        """Remove the backward hooks (finish or abandon training with this reducer)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.overlap = False

    @contextmanager
    def no_sync(self):
        """Backward passes inside send nothing (micro-batches that only accumulate).

        The call after the last micro-batch's backward, outside the block, sends
        the accumulated gradients, as ``torch.nn.parallel.DistributedDataParallel.no_sync``.
        """
        held, self._holding = self._holding, True
        try:
            yield
        finally:
            self._holding = held

    # ---- during backward -----------------------------------------------------------------
    def _gradients_ready(self, path: str, layer, dout, dx) -> None:
        """Backward hook: copy ``layer``'s fresh gradients in; start the buckets now full."""
        if self._key is None:   # first step: learn the order in which gradients get ready
            for name in layer.params:
                if name not in layer.frozen:
                    self._order.setdefault(join_key(path, name))
            return
        if self._holding:
            return
        start = time.perf_counter()
        for name, grad in layer.grads.items():
            slot = self._where.get(join_key(path, name))
            if slot is None or name in layer.frozen:
                continue
            bucket, lo, hi = slot
            if bucket.started:           # written again after its bucket left: resend later
                bucket.stale = True
            elif grad.size == hi - lo:   # a changed shape is caught after backward
                bucket.buf[lo:hi] = grad.ravel()
                bucket.missing.discard(join_key(path, name))
        while self._next < len(self.buckets) and not self.buckets[self._next].missing:
            self._start(self.buckets[self._next])
            self.early += 1
        # MPI moves a non-blocking collective along only inside MPI calls
        self.comm.test([b.request for b in self.buckets[:self._next] if b.request is not None])
        self.seconds += time.perf_counter() - start

    def _start(self, bucket: Bucket) -> None:
        bucket.request = self.comm.start_allreduce_(bucket.buf)
        bucket.started = True
        self._next += 1
        self.collectives += 1

    # ---- after backward ------------------------------------------------------------------
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
        if self._layout_changed(grads):
            # what hooks started belongs to the old layout, started alike on every rank
            self.comm.wait([b.request for b in self.buckets if b.request is not None],
                           "gradient allreduce")
            self._build(grads)
        for bucket in self.buckets[self._next:]:
            for name, lo, hi in bucket.slots:
                if name in bucket.missing:
                    bucket.buf[lo:hi] = grads[name].ravel()
            self._start(bucket)
        self.comm.wait([b.request for b in self.buckets], "gradient allreduce")
        stale = [b for b in self.buckets if b.stale]
        for bucket in stale:
            for name, lo, hi in bucket.slots:
                bucket.buf[lo:hi] = grads[name].ravel()
        self.comm.allreduce_([b.buf for b in stale], "gradient allreduce")
        self.collectives += len(stale)
        scale = 1.0 / self.comm.world_size
        for bucket in self.buckets:
            bucket.buf *= bucket.buf.dtype.type(scale)
            for name, lo, hi in bucket.slots:
                grads[name][...] = bucket.buf[lo:hi].reshape(grads[name].shape)
            bucket.reset()
        self._next = 0
        self.steps += 1
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        self.wait_seconds += elapsed

    def _buffers(self) -> dict[str, np.ndarray]:
        if self.net is None:
            return {}
        return {f"buffer:{path}.{name}": value for path, layer in self.net.named_layers()
                for name, value in layer.buffers.items() if value.dtype.kind == "f"}

    def _layout_changed(self, grads: dict[str, np.ndarray]) -> bool:
        if self._key is None or len(grads) != len(self._where):
            return True
        for name, grad in grads.items():
            slot = self._where.get(name)
            if slot is None or slot[0].buf.dtype != grad.dtype or slot[2] - slot[1] != grad.size:
                return True
        return False

    def _build(self, grads: dict[str, np.ndarray]) -> None:
        """Buckets in the order gradients got ready (then the rest, then buffers); every
        rank checks that rank 0 built the same."""
        ready = [n for n in self._order if n in grads]
        rest = [n for n in grads if n not in self._order and not n.startswith("buffer:")]
        buffers = [n for n in grads if n.startswith("buffer:")]
        key = [[n, list(grads[n].shape), grads[n].dtype.str] for n in ready + rest + buffers]
        # Ranks whose gradients differ would sum unrelated numbers or deadlock: check once.
        if self.comm.broadcast_json(key) != key:
            raise DistributedError(
                f"rank {self.comm.rank}: the network's trainable parameters differ from rank 0's; "
                "every rank must build the same model and freeze the same layers")
        self._key, self.buckets, self._where = key, [], {}
        for names in (ready + rest, buffers):
            for dtype in dict.fromkeys(grads[n].dtype for n in names):
                slots, size = [], 0
                for name in (n for n in names if grads[n].dtype == dtype):
                    if slots and (size + grads[name].size) * dtype.itemsize > self.bucket_bytes:
                        self.buckets.append(Bucket(dtype, slots))
                        slots, size = [], 0
                    slots.append((name, size, size + grads[name].size))
                    size += grads[name].size
                self.buckets.append(Bucket(dtype, slots))
        self._where = {name: (bucket, lo, hi) for bucket in self.buckets
                       for name, lo, hi in bucket.slots}
        self._next = 0


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
