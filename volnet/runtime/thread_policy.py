"""How many threads NumPy's BLAS (OpenBLAS) and volnet's compiled kernels use.

One count, the user's (:func:`user_threads`: VOLNET_THREADS, OMP_NUM_THREADS or
OPENBLAS_NUM_THREADS) or every core, is given to numba when it loads; with the compiled
kernels in use that count is volnet's own threads (blocks, ``prange`` kernels, split
products) and OpenBLAS runs one thread inside each layer call (volnet.runtime.block_threads
says why); on the NumPy path it is OpenBLAS's count.

Why: on a machine whose cores are busy, OpenBLAS worker threads spin-wait for
each other. Measured here (2 cores, load ~10): 20 LeNet-5 training batches
took 0.7 s with one BLAS thread and 7.0 s with two. ``Trainer.fit`` (so ``vn.fit``
and ``volnet train``) therefore picks the count itself at the start of each epoch:
the cores no other process keeps busy (:func:`choose_threads`), applied to BLAS
through threadpoolctl and to the numba kernels through ``set_num_threads``; on an
idle machine that is every core (``volnet train lenet5``: 19.0 s on two threads
against 24.2 s on one). ``volnet train --threads N`` pins the count.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from volnet.runtime import backend, block_threads

# ---- threads chosen by the library (OpenBLAS via its own functions, numba for compiled kernels) ----

USER_VARIABLES = ("VOLNET_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_pinned = {"count": None}


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)   # total, idle+iowait


def idle_cores(sample_s: float = 0.05) -> float:
    """Cores left idle by every other process, measured over ``sample_s`` seconds.

    Called while this process itself waits, so what is busy is someone else's. Falls
    back to cores minus the load average where /proc/stat is missing (not Linux).
    """
    before = _cpu_times()
    if before is None:
        try:
            return max(0.0, os.cpu_count() - os.getloadavg()[0])
        except (AttributeError, OSError, TypeError):
            return float(cpu_count())
    time.sleep(sample_s)
    after = _cpu_times()
    total, idle = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * idle / total if total > 0 else float(cpu_count())


def user_threads() -> int | None:
    """The count the user set: :func:`pin_threads`, else VOLNET_THREADS, OMP_NUM_THREADS or
    OPENBLAS_NUM_THREADS (first set wins); None when none is set."""
    if _pinned["count"] is not None:
        return _pinned["count"]
    for name in USER_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def choose_threads() -> int:
    """Threads for BLAS and compiled kernels: the user's count, else the idle cores (>= 1).

    A count set through VOLNET_THREADS, OMP_NUM_THREADS or OPENBLAS_NUM_THREADS (first
    set wins) or :func:`pin_threads` is used as given. Otherwise every core that no other
    process keeps busy: a thread on a busy core makes its siblings spin-wait at each
    barrier (20 LeNet-5 batches: 0.7 s on one thread, 7.0 s on two with one core busy).
    """
    user = user_threads()
    if user is not None:
        return user
    return max(1, min(cpu_count(), int(idle_cores() + 0.25)))


def pin_threads(count: int | None) -> None:
    """Make :func:`choose_threads` return ``count`` (None: choose again); ``volnet train --threads``."""
    _pinned["count"] = None if count is None else max(1, int(count))


@contextlib.contextmanager
def use_threads(count: int) -> Iterator[int]:
    """Run the enclosed code with ``count`` BLAS threads and compiled-kernel threads.

    NumPy's OpenBLAS is set through its own functions (volnet.runtime.openblas), from
    any Python thread; another BLAS (MKL, Accelerate) through threadpoolctl.
    """
    numba, previous = backend.numba_module(), None
    if numba is not None:
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(count, numba.config.NUMBA_NUM_THREADS)))
    before = block_threads.outside_blas_threads()   # kernels running blocks hold it at 1
    try:
        if before is not None:
            block_threads.set_outside_blas_threads(count)
            yield count
        else:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(limits=count, user_api="blas"):
                yield count
    finally:
        if before is not None:
            block_threads.set_outside_blas_threads(before)
        if numba is not None:
            numba.set_num_threads(previous)


@contextlib.contextmanager
def auto_threads() -> Iterator[int]:
    """:func:`use_threads` with :func:`choose_threads`'s count (what ``Trainer.fit`` runs in)."""
    with use_threads(choose_threads()) as count:
        yield count

