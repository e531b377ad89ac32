"""Volnet's own threads: blocks of one kernel on several Python threads, each with
one-thread BLAS, and large lone matrix products split the same way.

A convolution cut into blocks (chunks of samples for im2col, blocks of tile rows for
Winograd) runs fastest on this kind of machine when every thread does its own blocks
from start to end: its own unrolling or tile transforms (NumPy copies and ``nogil``
numba kernels release the GIL) and its own single-threaded BLAS products. Letting
OpenBLAS split each product instead costs a fork/join per product, and its workers
spin-wait after each call on the core the next compiled loop needs (measured on the
2-core machine, benchmarks/README.md: a 16x64x56x56 Winograd forward took 56-85 ms with
numba's and OpenBLAS's threads taking turns, 23 ms with blocks on two Python threads).

The policy, one for every kernel: while the compiled kernels are in use, OpenBLAS runs
one thread inside volnet's work (:func:`one_blas_thread`, entered by every outermost
``Layer.forward``/``backward`` and by :func:`run`), so its workers are never woken and
never spin; the parallel work is volnet's: blocks on these threads, numba's ``prange``
kernels on numba's (OpenMP, passive waiting), and large products that are not already
in a block split by :func:`matmul`. A single OpenBLAS product at two threads left its
worker spinning ~0.1 s on the core the next block needed: the VGG-style CIFAR backward
took 150 ms on two threads against 131 on one (benchmarks/README.md, seventh round).

Used once the compiled kernels are in use (numba imported); under ``VOLNET_KERNELS=numpy``,
or before any call was large enough to load numba, :func:`workers` is 1, every block
runs on the calling thread as before and OpenBLAS keeps its own thread count.
"""

from __future__ import annotations

import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from volnet.runtime import backend, openblas

_shared = {"executor": None, "size": 0, "active": 0, "saved": None}
_local = threading.local()
_lock = threading.Lock()
_PREFIX = "volnet-block"
SPLIT_MIN = 1 << 25      # multiply-adds from which matmul splits a product over the workers
#                          (~0.35 ms on one core; a hand-off to a block thread costs 50-70 us;
#                          2^24 won 0.03-0.05 ms per product alone but lost GoogLeNet b1 ~1 ms
#                          whole-net: the next layer reads the other core's half, section 37)


def workers() -> int:
    """Threads for block-parallel kernels: numba's count (chosen by
    volnet.runtime.thread_policy) once the compiled kernels are in use, else 1."""
    numba = backend.loaded_numba() if backend.fusing() else None
    return 1 if numba is None else max(1, int(numba.get_num_threads()))


def _inside_blocks() -> bool:
    """Whether the calling thread is doing one block of a parallel :func:`run` (a block
    thread, or the caller doing its own block): nested work stays on it."""
    return getattr(_local, "busy", False) or threading.current_thread().name.startswith(_PREFIX)


@contextlib.contextmanager
def one_blas_thread():
    """OpenBLAS on one thread while any caller is inside: the first caller in sets it, the
    last one out restores the count from before (volnet.runtime.openblas, which works
    from any thread; threadpoolctl ignores every thread but the first that set a limit).
    Another BLAS is left as it is. Nested and concurrent callers are counted."""
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


def section():
    """What an outermost layer call runs in: :func:`one_blas_thread` when volnet's own
    threads do the parallel work (:func:`workers` > 1), else nothing (OpenBLAS keeps its
    count, the only parallelism of the NumPy path)."""
    return one_blas_thread() if workers() > 1 else contextlib.nullcontext()


def run(fn, count: int) -> list:
    """``[fn(0), ..., fn(count - 1)]``; with ``count`` > 1 on as many threads (the caller's
    included) while BLAS uses one thread each. ``fn`` must release the GIL for its heavy
    parts (``nogil`` kernels, NumPy's matmul and copies). Safe to call from several threads
    at once (their blocks queue for the shared workers); called from inside a block (a
    block thread, or the caller's own block), it runs the blocks there, in turn."""
    if count <= 1 or _inside_blocks():
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

    with one_blas_thread():
        futures = [executor.submit(block, i) for i in range(1, count)]
        _local.busy = True
        try:
            first = fn(0)
        finally:
            _local.busy = False
            wait(futures)       # every block has finished before the caller goes on
    return [first] + [f.result() for f in futures]


def split_count(multiply_adds: int) -> int:
    """Threads to split one product of ``multiply_adds`` over: the :func:`workers` from
    ``SPLIT_MIN`` up, unless the caller is already one block of a parallel :func:`run`."""
    if multiply_adds < SPLIT_MIN or _inside_blocks():
        return 1
    return workers()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, split over the :func:`workers` when the product is
    large (``SPLIT_MIN`` multiply-adds) and not already one block of a parallel :func:`run`.

    What OpenBLAS's own threads did for a lone product (a fully connected layer, a layer
    whose blocks do not go on threads), without its spinning workers: the result is cut
    along its batch axis, or else along the longer of its rows and columns, and each
    thread runs its part with one-thread BLAS into its slice of ``out``. Every element is
    the same dot product as unsplit, so the answer does not depend on the thread count
    beyond BLAS's own kernel choice per shape.
    """
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    (m, k), n = a.shape[-2:], b.shape[-1]
    # the size first (an upper bound, then exact): most products are small, and numba's
    # thread count costs ~8 us to read
    if math.prod(a.shape[:-2]) * math.prod(b.shape[:-2]) * m * n * k < SPLIT_MIN:
        return np.matmul(a, b, out=out)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    count = split_count(math.prod(batch) * m * n * k)
    if count <= 1:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty(batch + (m, n), dtype=np.result_type(a, b))
    if batch and a.shape[:-2] == b.shape[:-2] == batch and batch[0] >= count:
        edges = np.linspace(0, batch[0], count + 1).astype(int)

        def part(i):
            s = slice(edges[i], edges[i + 1])
            np.matmul(a[s], b[s], out=out[s])
    elif m >= n:
        count = min(count, m)
        edges = np.linspace(0, m, count + 1).astype(int)

        def part(i):
            s = slice(edges[i], edges[i + 1])
            np.matmul(a[..., s, :], b, out=out[..., s, :])
    else:
        count = min(count, n)
        edges = np.linspace(0, n, count + 1).astype(int)

        def part(i):
            s = slice(edges[i], edges[i + 1])
            np.matmul(a, b[..., s], out=out[..., s])
    run(part, count)
    return out


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
