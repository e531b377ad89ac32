"""Data-parallel training over MPI: communicator, gradient allreduce, shards, abort.

Every rank holds a full copy of the network, reads its own shard of each epoch,
computes gradients on its local batch, and averages them with the other ranks
before the optimizer step, so every rank applies the same update (Horovod's
recipe, with MPI through ``mpi4py`` as the engine; no home-made networking).

* ``get_communicator()`` returns a world of one process when MPI is absent or
  not launched, so single-process training needs nothing from this module.
* ``GradientAllreducer`` flattens the gradients into a few large contiguous
  buckets and averages each with one non-blocking ``Iallreduce``; waiting polls
  with a deadline, so a dead or hung peer raises ``DistributedError`` instead of
  hanging forever.
* Shards come from ``volnet.data.batches.BatchIterator(shard=(rank, world_size))``:
  each epoch's seeded permutation dealt round-robin, so local batch t of all
  ranks together is global batch t of one process with a W times larger batch.
* ``abort_on_error`` turns an exception on one rank into ``MPI_Abort``, which
  takes every rank down with a clear message.

Example:
    >>> comm = get_communicator(distributed=False)
    >>> comm.rank, comm.world_size
    (0, 1)
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from volnet.errors import ConfigError, VolnetError

# brings mpi4py and an MPICH build from PyPI
INSTALL_HINT = "pip install 'volnet[mpi]' (in a volnet source checkout: pip install '.[mpi]')"
DEFAULT_TIMEOUT = 300.0                    # seconds a collective may wait for the slowest rank
# Environment variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun) set.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


class DistributedError(VolnetError, RuntimeError):
    """A collective failed or timed out, or distributed training is misconfigured."""


def mpi_available() -> bool:
    """Whether ``mpi4py`` (and so an MPI library) can be imported."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``)."""
    return any(name in os.environ for name in _LAUNCHER_VARS)


def _launched_size() -> int:
    """World size announced by the launcher's environment (1 when unknown)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def _timeout_from_env(timeout: float | None) -> float:
    if timeout is None:
        text = os.environ.get("VOLNET_MPI_TIMEOUT", str(DEFAULT_TIMEOUT))
        try:
            timeout = float(text)
        except ValueError:
            raise ConfigError(f"VOLNET_MPI_TIMEOUT must be a number of seconds, got {text!r}") from None
    if not timeout > 0:
        raise ConfigError(f"collective timeout must be > 0 seconds, got {timeout}")
    return float(timeout)


class Communicator:
    """A world of one process: every collective is the identity.

    ``MPICommunicator`` has the same methods over a real MPI communicator, so
    training code calls them unconditionally.
    """

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that prints and writes checkpoints."""
        return self.rank == 0

    def allreduce_(self, arrays: list[np.ndarray], what: str = "allreduce") -> None:
        """Sum each contiguous array over all ranks, in place."""

    def broadcast_(self, arrays: list[np.ndarray], root: int = 0, what: str = "broadcast") -> None:
        """Overwrite each contiguous array with rank ``root``'s copy, in place."""

    def broadcast_json(self, value, root: int = 0):
        """Rank ``root``'s JSON-serialisable ``value``, on every rank (JSON, never pickle)."""
        return value

    def barrier(self) -> None:
        """Wait until every rank gets here."""

    def abort(self, code: int = 1) -> None:
        """Stop every rank; in a world of one, just exit."""
        sys.exit(code)

    def __deepcopy__(self, memo):   # layers holding a communicator stay copyable
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class MPICommunicator(Communicator):
    """``Communicator`` over an ``mpi4py`` communicator, with a deadline on every collective.

    Args:
        comm: an ``mpi4py.MPI.Comm``; default ``COMM_WORLD``.
        timeout: seconds a collective may wait before raising ``DistributedError``;
            default ``$VOLNET_MPI_TIMEOUT`` or 300.
    """

    def __init__(self, comm=None, timeout: float | None = None) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.timeout = _timeout_from_env(timeout)

    def allreduce_(self, arrays, what="allreduce"):
        requests = [self.comm.Iallreduce(self._mpi.IN_PLACE, _contiguous(a), op=self._mpi.SUM)
                    for a in arrays]
        self._wait(requests, what)

    def broadcast_(self, arrays, root=0, what="broadcast"):
        self._wait([self.comm.Ibcast(_contiguous(a), root=root) for a in arrays], what)

    def broadcast_json(self, value, root=0):
        data = json.dumps(value).encode() if self.rank == root else b""
        size = np.array([len(data)], dtype=np.int64)
        self.broadcast_([size], root, "broadcast of the run's metadata")
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == root \
            else np.empty(int(size[0]), dtype=np.uint8)
        self.broadcast_([buf], root, "broadcast of the run's metadata")
        return json.loads(buf.tobytes().decode())

    def barrier(self):
        self._wait([self.comm.Ibarrier()], "barrier")

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)
        os._exit(code)   # MPICH's MPI_Abort can return before the launcher ends this process

    def _wait(self, requests, what: str) -> None:
        """Poll until every request completes; raise once the deadline passes.

        Polling instead of a blocking wait is what lets a rank notice that a peer
        died or hung: MPI's blocking collectives would wait forever.
        """
        deadline = time.monotonic() + self.timeout
        spin_until = time.monotonic() + 2e-4   # short collectives finish while spinning
        delay = 1e-5
        while not self._mpi.Request.Testall(requests):
            now = time.monotonic()
            if now > deadline:
                raise DistributedError(
                    f"rank {self.rank} of {self.world_size}: {what} did not complete within "
                    f"{self.timeout:g} s; another rank has probably died, hung or failed. "
                    "Check the other ranks' output; if steps are legitimately this slow, "
                    "raise the limit with VOLNET_MPI_TIMEOUT=<seconds>.")
            if now > spin_until:
                time.sleep(delay)   # back off so a waiting rank does not steal a busy core
                delay = min(delay * 2, 1e-3)


def _contiguous(a: np.ndarray) -> np.ndarray:
    if not (isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable):
        raise DistributedError("collectives need writeable C-contiguous NumPy arrays, "
                               f"got {type(a).__name__}")
    return a


def get_communicator(distributed: bool | None = None, timeout: float | None = None) -> Communicator:
    """The communicator training should use.

    Args:
        distributed: ``True`` requires MPI (error with the install command if
            ``mpi4py`` is missing); ``False`` always gives a world of one;
            ``None`` (default) uses MPI when an MPI launcher started this process
            and ``mpi4py`` is installed.
        timeout: seconds any collective may wait (see ``MPICommunicator``).

    Returns:
        ``MPICommunicator`` or the single-process ``Communicator``.
    """
    if distributed is False:
        return Communicator()
    if not mpi_available():
        if distributed or _launched_size() > 1:   # W copies would each train alone otherwise
            raise ConfigError("distributed training needs mpi4py and an MPI library; install "
                              f"them with `{INSTALL_HINT}` and launch with `mpiexec -n 4 volnet "
                              "train ...` (or srun on a Slurm cluster)")
        return Communicator()
    if distributed is None and not launched_by_mpi():
        return Communicator()   # importing mpi4py alone would start MPI for nothing
    return MPICommunicator(timeout=timeout)


@contextmanager
def abort_on_error(comm: Communicator) -> Iterator[None]:
    """Turn an exception on this rank into ``MPI_Abort`` of every rank.

    Without it, the other ranks would wait in their next collective. The error is
    printed (with the rank) before aborting; in a world of one it propagates.
    Any exit from inside the block counts (Ctrl-C, ``sys.exit``): the other
    ranks could not finish the epoch without this one.
    """
    try:
        yield
    except BaseException as err:
        if comm.world_size == 1:
            raise
        print(f"volnet: rank {comm.rank} of {comm.world_size} failed with "
              f"{type(err).__name__}: {err}\nvolnet: aborting all ranks.", file=sys.stderr,
              flush=True)
        comm.abort(1)
        raise


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    """Per-rank batch for a global batch; W must divide it so ranks stay in lockstep.

    Example:
        >>> local_batch_size(64, 4)
        16
    """
    if global_batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {global_batch_size}")
    if global_batch_size < world_size or global_batch_size % world_size:
        raise ConfigError(f"batch size {global_batch_size} is the global batch and must be a "
                          f"multiple of the {world_size} ranks; use e.g. "
                          f"{max(world_size, global_batch_size // world_size * world_size)}")
    return global_batch_size // world_size


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
        >>> reducer = GradientAllreducer(get_communicator(distributed=False))
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


def data_parallel(net, comm: Communicator, *, sync_bn: bool = False,
                  bucket_mb: float = 25.0) -> GradientAllreducer:
    """Prepare ``net`` for data-parallel training; returns the Trainer's ``grad_hook``.

    Converts batch norm to synchronised batch norm when ``sync_bn`` and there
    is more than one rank (otherwise each rank normalises with its local batch's
    statistics, and the running statistics are averaged over the ranks every
    step), then copies rank 0's weights to every rank.

    Example:
        >>> hook = data_parallel(vn.Linear(4, 2), get_communicator(distributed=False))
        >>> type(hook).__name__
        'GradientAllreducer'
    """
    if sync_bn and comm.world_size > 1:
        from volnet.train.sync_bn import convert_sync_batchnorm

        convert_sync_batchnorm(net, comm)
    broadcast_model(net, comm)
    return GradientAllreducer(comm, bucket_mb=bucket_mb, net=net)
