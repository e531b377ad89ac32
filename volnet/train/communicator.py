"""MPI communicators: a world of one process, or ``mpi4py`` with a deadline on every collective.

``get_communicator()`` chooses one; ``abort_on_error`` turns an exception on one
rank into ``MPI_Abort`` of every rank. ``train/data_parallel.py`` tells the whole
data-parallel story.

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
ABORT_GRACE = 0.5                          # seconds the launcher gets to forward a dying rank's output
# Environment variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's srun) set.
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")


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
    return any(name in os.environ for name in LAUNCHER_VARS)


def launched_size() -> int:
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
        self.wait([self.start_allreduce_(a) for a in arrays], what)

    def start_allreduce_(self, array: np.ndarray):
        """Start summing ``array`` over all ranks, in place; returns a request for :meth:`wait`.

        Every rank must start the same collectives in the same order. The array
        must not be read or written until the request completes. In a world of one the
        sum is the array itself: nothing to start, and the request is None.
        """

    def test(self, requests: list) -> bool:
        """Whether every request has completed; also moves the transfers along.

        MPI progresses a non-blocking collective only inside MPI calls, so code
        that overlaps communication with work calls this now and then.
        """
        return True

    def wait(self, requests: list, what: str = "allreduce") -> None:
        """Block until every request has completed (or raise on a deadline)."""

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

    def start_allreduce_(self, array):
        return self.comm.Iallreduce(self._mpi.IN_PLACE, _contiguous(array), op=self._mpi.SUM)

    def test(self, requests):
        return bool(self._mpi.Request.Testall(requests))

    def wait(self, requests, what="allreduce"):
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
        # MPI_Abort makes the launcher kill every process at once; it may stop reading this
        # rank's pipes first, and the error just printed (the reason for the abort) is lost:
        # CI once saw a failed rank stop the job with an empty output. Give it time to forward.
        time.sleep(ABORT_GRACE)
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
        if distributed or launched_size() > 1:   # W copies would each train alone otherwise
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
    ranks could not finish the epoch without this one. The launcher exits with the
    code the ``volnet`` command gives the same error in one process: 2 for a
    :class:`VolnetError` (bad input or settings), 130 for Ctrl-C, else 1.
    """
    try:
        yield
    except BaseException as err:
        if comm.world_size == 1:
            raise
        print(f"volnet: rank {comm.rank} of {comm.world_size} failed with "
              f"{type(err).__name__}: {err}\nvolnet: aborting all ranks.", file=sys.stderr,
              flush=True)
        comm.abort(2 if isinstance(err, VolnetError)
                   else 130 if isinstance(err, KeyboardInterrupt) else 1)
        raise
