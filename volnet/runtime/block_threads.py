"""Blocks of one kernel on several Python threads, each with one-thread BLAS.

A convolution cut into blocks (chunks of samples for im2col, blocks of tile rows for
Winograd) runs fastest on this kind of machine when every thread does its own blocks
from start to end: its own unrolling or tile transforms (NumPy copies and ``nogil``
numba kernels release the GIL) and its own single-threaded BLAS products. Letting
OpenBLAS split each product instead costs a fork/join per product, and its workers
spin-wait after each call on the core the next compiled loop needs (measured on the
2-core machine, benchmarks/README.md: a 16x64x56x56 Winograd forward took 56-85 ms with
numba's and OpenBLAS's threads taking turns, 23 ms with blocks on two Python threads).

Used once the compiled kernels are in use (numba imported); under ``VOLNET_KERNELS=numpy``,
or before any call was large enough to load numba, :func:`workers` is 1 and every block
runs on the calling thread as before.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from volnet.runtime import backend, openblas

_shared = {"executor": None, "size": 0, "active": 0, "saved": None}
_local = threading.local()
_lock = threading.Lock()
_PREFIX = "volnet-block"


def workers() -> int:
    """Threads for block-parallel kernels: numba's count (chosen by
    volnet.runtime.thread_policy) once the compiled kernels are in use, else 1."""
    numba = backend.loaded_numba() if backend.fusing() else None
    return 1 if numba is None else max(1, int(numba.get_num_threads()))


@contextlib.contextmanager
def _one_blas_thread():
    """OpenBLAS on one thread while any caller runs blocks: the first caller in sets it, the
    last one out restores the count from before (volnet.runtime.openblas, which works
    from any thread; threadpoolctl ignores every thread but the first that set a limit).
    Another BLAS is left as it is."""
    with _lock:
        if _shared["active"] == 0:
            _shared["saved"] = openblas.blas_threads()
            if _shared["saved"] not in (None, 1):
                openblas.set_blas_threads(1)
        _shared["active"] += 1
    try:
        yield
    finally:
        with _lock:
            _shared["active"] -= 1
            if _shared["active"] == 0 and _shared["saved"] not in (None, 1):
                openblas.set_blas_threads(_shared["saved"])


def outside_blas_threads() -> int | None:
    """OpenBLAS's thread count outside block sections (None: not OpenBLAS)."""
    with _lock:
        return _shared["saved"] if _shared["active"] else openblas.blas_threads()


def set_outside_blas_threads(count: int) -> None:
    """Set OpenBLAS's count for code outside block sections: now, or, while some thread is
    running blocks, when the last of them leaves (volnet.runtime.thread_policy.use_threads)."""
    with _lock:
        if _shared["active"]:
            _shared["saved"] = count
        else:
            openblas.set_blas_threads(count)


def run(fn, count: int) -> list:
    """``[fn(0), ..., fn(count - 1)]``; with ``count`` > 1 on as many threads (the caller's
    included) while BLAS uses one thread each. ``fn`` must release the GIL for its heavy
    parts (``nogil`` kernels, NumPy's matmul and copies). Safe to call from several threads
    at once (their blocks queue for the shared workers); called from a block thread, it
    runs the blocks there, in turn."""
    if count <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(i) for i in range(count)]
    with _lock:
        if _shared["size"] < count - 1:     # the old pool's threads end when it is collected
            _shared["executor"] = ThreadPoolExecutor(count - 1, thread_name_prefix=_PREFIX)
            _shared["size"] = count - 1
        executor = _shared["executor"]
    errors = np.geterr()          # NumPy's error state is per thread: the blocks take the caller's

    def block(i):
        with np.errstate(**errors):
            return fn(i)

    with _one_blas_thread():
        futures = [executor.submit(block, i) for i in range(1, count)]
        try:
            first = fn(0)
        finally:
            wait(futures)       # every block has finished before the caller goes on
    return [first] + [f.result() for f in futures]


def scratch(name: str, size: int, dtype=np.float32) -> np.ndarray:
    """A private work array of ``size`` elements for the calling thread, reused by its
    next calls with the same ``name``.

    Kernels use it for block buffers (Winograd's transformed tiles and products, im2col's
    columns) that never leave the call: a fresh multi-megabyte array each call costs its
    page faults again (measured: a 1x128x112x112 Winograd forward 29.7 ms with fresh
    buffers, 24.9 ms without the faults). Never return it or keep it past the call.
    Per thread, so concurrent callers never share one.
    """
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get(name)
    if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
        buf = bufs[name] = np.empty(size, dtype=dtype)
    return buf[:size]
