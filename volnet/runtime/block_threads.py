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
never spin (volnet's own threads spin at most ``SPIN_US``, below); the parallel work is
volnet's: blocks on these threads, numba's ``prange`` kernels on numba's (OpenMP, passive
waiting), and large products that are not already in a block split by :func:`matmul`. A single OpenBLAS product at two threads left its
worker spinning ~0.1 s on the core the next block needed: the VGG-style CIFAR backward
took 150 ms on two threads against 131 on one (benchmarks/README.md, seventh round).

The hand-off (:func:`run`): persistent daemon threads, each asleep on its own lock; the
caller hands each free thread its share of the blocks by releasing that lock, runs its
own share, then waits on one lock the last thread releases. Measured on the 2-core machine
under load (benchmarks/README.md section 41): a call of two trivial ``nogil`` blocks takes
13-25 us, against 23-56 us through a ThreadPoolExecutor's futures and 4-9 us for a numba
``prange`` launch (OpenMP, passive waiting). A helper needs the GIL to start its block's
Python, which the caller holds until its own block reaches a kernel: a helper that asked
for it then slept on it, and on a VM whose idle cores halt that sleep cost a core's wake-up
(in ResNet-18 b1's hand-offs the helper's block started 90-110 us into the call, the
caller's 16). So where each block starts with a compiled kernel, the caller's kernel raises
:data:`ENTERED` as it starts, outside the GIL, and the helpers wait for it (``run(...,
entered=True)``).

Waiting spins briefly before it sleeps (``SPIN_US``, runtime/spin_wait.py): a block thread
after its job, and a caller for its helpers. On a virtual machine a core that has slept
for a millisecond takes 0.25-0.5 ms to wake (section 59), more than many blocks take; so
each outermost layer call also wakes sleeping block threads as it starts (:func:`wake_up`).
The spin is bounded and outside the GIL, and an idle block thread's spin ends early when a
``prange`` kernel is launched (:func:`stop_spinning`, called by ``launch.on_threads``,
which runs the serial variant instead inside a block), so numba's threads get the core; a
spinning OpenBLAS worker (the lesson
above) held it ~0.1 s, this at most ``SPIN_US`` (a caller's spin lasts while its own
helpers still work, so no ``prange`` kernel of its runs meanwhile).

Used once the compiled kernels are in use (numba imported); under ``VOLNET_KERNELS=numpy``,
or before any call was large enough to load numba, :func:`workers` is 1, every block
runs on the calling thread as before and OpenBLAS keeps its own thread count.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import sys
import threading
import time
import weakref

import numpy as np

from volnet.errors import ConfigError
from volnet.runtime import backend, openblas

_shared = {"active": 0, "saved": None}
_local = threading.local()
_lock = threading.Lock()
_pool = {"idle": [], "made": 0, "lock": threading.Lock()}
_PREFIX = "volnet-block"


def _spin_us_setting() -> float:
    """VOLNET_SPIN_US, microseconds a waiting thread spins before it sleeps (default 1000;
    0: never spins; measured in section 59)."""
    text = os.environ.get("VOLNET_SPIN_US", "1000").strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"VOLNET_SPIN_US={text!r} is not a number of microseconds >= 0; "
                          f"unset it for the default (1000) or set 0 to never spin")
    return value


SPIN_US = _spin_us_setting()
_WAKE, _STOP = 1, 2     # a worker's flag: a job was handed to it; stop spinning, sleep
# every thread's scratch table (scratch), for release_scratch; a thread that ends takes its
# table with it
_scratches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
SPLIT_MIN = 1 << 25      # multiply-adds from which a product is split over the workers
#                          (matmul, conv_gemm's batch-1 products, conv_choice.split_fits);
#                          ~0.35 ms on one core. Only GoogLeNet b1 splits differently from
#                          2^22 to 2^25 (10 splits at 2^25, 31 at 2^23). Section 41's loaded
#                          estimate favoured 2^23 (24.9 -> 22.9 ms) with the lock hand-off,
#                          but on the idle machine (interleaved forwards, medians) 2^25 /
#                          2^24 / 2^23 measured 21.37 / - / 22.15 ms, then 20.69 / 20.79 /
#                          20.53: no gain to pay for the extra splits, so 2^25 stays (as in
#                          section 37, where 2^24 lost ~1 ms with the older hand-off).


def workers() -> int:
    """Threads for block-parallel kernels: numba's count (chosen by
    volnet.runtime.thread_policy) once the compiled kernels are in use, else 1.

    Read once per outermost layer call (:func:`section` keeps it for the calling thread:
    a conv asked for it 3-4 times, ~1.3 us each through numba); live everywhere else."""
    cached = getattr(_local, "workers", None)
    return _read_workers() if cached is None else cached


def _read_workers() -> int:
    numba = backend.loaded_numba() if backend.fusing() else None
    return 1 if numba is None else max(1, int(numba.get_num_threads()))


def inside_blocks() -> bool:
    """Whether the calling thread is doing one block of a parallel :func:`run` (a block
    thread, or the caller doing its own block): nested work stays on it."""
    return getattr(_local, "busy", False)


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


@contextlib.contextmanager
def section():
    """What an outermost layer call runs in: :func:`one_blas_thread` when volnet's own
    threads do the parallel work (:func:`workers` > 1), else nothing (OpenBLAS keeps its
    count, the only parallelism of the NumPy path). Inside, :func:`workers` answers the
    count read on entry, on the calling thread (a thread count set inside a layer call
    takes effect at the next outermost call); before numba is loaded it stays a live
    read, so the call that loads it sees its count at once."""
    count = _read_workers()
    previous = getattr(_local, "workers", None)
    _local.workers = count if backend.loaded_numba() is not None else previous
    if count > 1 and previous is None:
        wake_up()             # the outermost call: its splits will find the threads awake
    try:
        if count > 1:
            with one_blas_thread():
                yield
        else:
            yield
    finally:
        _local.workers = previous


# Raised (to 1) by the caller's first compiled kernel of a run(..., entered=True), at its
# entry, outside the GIL; a helper woken for that call waits for it, up to ENTERED_WAIT_US,
# before it takes the GIL (the module's docstring; in ResNet-18 b1's outer-kernel hand-offs
# the helper's block started 89-111 us into the call, 43-51 us with the wait:
# benchmarks/README.md, section 65). Shared by concurrent callers: another's raise only
# ends a wait early, another's reset only makes it last up to ENTERED_WAIT_US.
ENTERED = np.ones(1, np.int64)
ENTERED_WAIT_US = 100.0


def run(fn, count: int, entered: bool = False) -> list:
    """``[fn(0), ..., fn(count - 1)]``; with ``count`` > 1 on as many threads (the caller's
    included) while BLAS uses one thread each. ``fn`` must release the GIL for its heavy
    parts (``nogil`` kernels, NumPy's matmul and copies). The blocks run with the caller's
    NumPy error state; the first failing block's exception (lowest index) is raised once
    every block has finished or stopped. Safe to call from several threads at once: each
    caller takes the block threads that are free, and one that finds none runs its blocks
    itself, in turn. Called from inside a block (a block thread, or the caller's own block),
    it runs the blocks there, in turn.

    ``entered``: each block's first step outside the GIL is a compiled kernel that raises
    :data:`ENTERED` as it starts (``spin_wait.raise_flag``); the helpers wait for the
    caller's (see ENTERED) before they run their blocks' Python."""
    if count <= 1 or inside_blocks():
        return [fn(i) for i in range(count)]
    results = [None] * count
    with one_blas_thread():
        helpers = _claim(count - 1)
        parts = len(helpers) + 1          # block i runs on part i % parts; the caller is part 0
        call = _Call(len(helpers)) if helpers else None
        if helpers:
            ENTERED[0] = 0 if entered else 1
            errors = np.geterr()          # NumPy's error state is per thread: the caller's
            for part, worker in enumerate(helpers, 1):
                with _pool["lock"]:       # a poked thread (wake_up) takes the job on waking
                    worker.job = (fn, part, parts, count, errors, results, call)
                    release = not worker.poked
                if release:
                    worker.flag[0] = _WAKE    # ends its spin, if it spins; else the lock wakes it
                    worker.wake.release()
        _local.busy = True
        try:
            failure = _blocks(fn, range(0, count, parts), results)
        finally:
            _local.busy = False
            if helpers:
                ENTERED[0] = 1            # (a block that raised nothing: the helpers go now)
                _wait(call.done, call.flag)   # every block has finished before the caller goes on
    failures = ([failure] if failure else []) + (call.failures if helpers else [])
    if failures:
        raise min(failures, key=lambda f: f[0])[1]
    return results


def _blocks(fn, indices, results):
    """Run ``fn`` over ``indices`` into ``results``; stop at the first failure and return
    it as ``(index, exception)`` (None when every block finished)."""
    for i in indices:
        try:
            results[i] = fn(i)
        except BaseException as exc:     # handed to the caller, which raises it
            return i, exc
    return None


class _Call:
    """One :func:`run`'s hand-off: how many block threads still work on it, their
    failures, and the lock the last of them releases for the caller."""

    __slots__ = ("done", "failures", "flag", "remaining")

    def __init__(self, helpers: int):
        self.remaining = helpers
        self.failures = []
        self.done = threading.Lock()
        self.done.acquire()
        self.flag = np.zeros(1, np.int64)   # set with ``done``: ends the caller's spin


class _Worker:
    """A persistent block thread, asleep on its own lock until a caller hands it a job (or
    :func:`wake_up` releases it with none); after each job it spins up to ``SPIN_US`` on
    its flag before it sleeps again.

    The hand-off is that lock, released by the caller and acquired by the thread, and the
    call's ``done`` lock on the way back: no future, queue or condition variable per block
    (a ThreadPoolExecutor's submit + wait cost 23-56 us a call here; benchmarks/README.md
    section 41)."""

    __slots__ = ("flag", "job", "poked", "spin_until", "wake")

    def __init__(self):
        self.wake = threading.Lock()
        self.wake.acquire()
        self.job = None
        self.flag = np.zeros(1, np.int64)   # _WAKE: a job was handed over; _STOP: sleep
        self.poked = False        # its lock released by wake_up, not yet taken (pool lock)
        self.spin_until = 0.0     # perf_counter time its spin ends (0: asleep or busy)

    def serve(self):
        _local.busy = True                # everything this thread runs is inside a block
        signal = None
        while True:
            self.spin_until = time.perf_counter() + SPIN_US * 1e-6
            # spinning first keeps this core awake; the last helper of a call tells its
            # caller from inside the spin, outside the GIL
            _wait(self.wake, self.flag, signal, ENTERED)
            self.spin_until = 0.0
            with _pool["lock"]:
                self.poked = False
                job, self.job = self.job, None
            signal = None
            if job is not None:           # None: woken by wake_up alone
                self.flag[0] = 0          # (a _STOP that came while it woke stays: no spin)
                signal = self._do(*job)   # its locals (the blocks' arrays) go with the call

    def _do(self, fn, part, parts, count, errors, results, call):
        if np.geterr() != errors:         # NumPy's error state is per thread: the caller's
            np.seterr(**errors)
        failure = _blocks(fn, range(part, count, parts), results)
        if failure:
            call.failures.append(failure)
        with _pool["lock"]:               # free for the next caller before this one is told
            _pool["idle"].append(self)
            call.remaining -= 1
            last = call.remaining == 0
        if last:                          # the caller's flag is set by serve's _wait
            call.done.release()
            return call.flag
        return None


def _claim(helpers: int) -> list:
    """Up to ``helpers`` free block threads for one call: started on first need, fewer or
    none while other callers hold them (or where no thread can start, as at interpreter
    shutdown); the caller runs the blocks nobody takes."""
    pool = _pool
    if pool["made"] < helpers and SPIN_US > 0:
        from volnet.runtime import spin_wait  # numba: only once block threads are in use
        spin_wait.prepare()               # not in the new threads' first wait
    with pool["lock"]:
        while pool["made"] < helpers:
            worker = _Worker()
            try:
                threading.Thread(target=worker.serve, name=f"{_PREFIX}-{pool['made']}",
                                 daemon=True).start()
            except RuntimeError:
                break
            pool["idle"].append(worker)
            pool["made"] += 1
        idle = pool["idle"]
        taken = idle[-helpers:]
        del idle[-helpers:]
    return taken


def _wait(lock: threading.Lock, flag: np.ndarray, signal: np.ndarray | None = None,
          entered: np.ndarray | None = None) -> None:
    """Acquire ``lock``: at once if it is free, else after up to ``SPIN_US`` of busy
    waiting (outside the GIL) for ``flag`` to be set (by a caller handing a job, the
    last helper of a call, or :func:`stop_spinning`), then asleep on it. The flag is only
    a hint to stop spinning; the lock is the hand-off (:func:`wake_up` releases it alone).

    ``signal``: another thread's flag to set first (a call's, by its last helper), from
    inside the spin when there is one: the caller spinning on it then wakes to a free GIL
    instead of sleeping on it while this thread runs Python into its own spin (a no-op
    hand-off took 31 us with the flag set before, 24 us with it set in the spin;
    benchmarks/README.md, section 60). ``entered``: a helper's :data:`ENTERED`: once the
    flag says a job came, the spin goes on until it is raised (at most ENTERED_WAIT_US)."""
    if lock.acquire(blocking=False):
        if signal is not None:
            signal[0] = _WAKE
        return
    if SPIN_US > 0:
        from volnet.runtime import spin_wait  # numba: only once block threads are in use
        spin_wait.spin(flag, SPIN_US, signal, _WAKE, entered, ENTERED_WAIT_US)
    elif signal is not None:
        signal[0] = _WAKE
    lock.acquire()


def awake() -> bool:
    """Whether a free block thread is spinning (its core awake): a hand-off to it now costs
    ~30 us, where one asleep for long takes up to ~0.5 ms to wake (section 59)."""
    now = time.perf_counter()
    return any(worker.spin_until > now for worker in _pool["idle"])


def wake_up() -> None:
    """Starts waking the free block threads that sleep, without waiting for them: called
    when a layer call begins, so their cores are awake (spinning) by the time its work
    splits, instead of the first hand-off waiting ~0.5 ms on a virtual machine. A job
    handed to one before it is up is taken when it is (``run``)."""
    if SPIN_US <= 0 or workers() <= 1:
        return
    now = time.perf_counter()
    with _pool["lock"]:          # threads not started yet start on their first job (_claim)
        for worker in _pool["idle"]:
            if not worker.poked and worker.spin_until <= now and worker.job is None:
                worker.poked = True
                worker.flag[0] = 0     # spin once up: an earlier stop_spinning is over
                worker.wake.release()


def stop_spinning() -> None:
    """Ends every idle block thread's spin (they sleep on their locks until their next
    job): a ``prange`` kernel is about to need the cores (runtime/launch.py)."""
    for worker in list(_pool["idle"]):
        if worker.flag[0] == 0:
            worker.flag[0] = _STOP
        worker.spin_until = 0.0


def _after_fork_in_child():
    """A forked child has only the forking thread: the parent's block threads are gone (a
    job handed to one would never finish) and a lock another thread held stays held.
    The child starts its own block threads on its first :func:`run`."""
    global _lock
    _lock = threading.Lock()
    _pool.update(idle=[], made=0, lock=threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


SPLIT_MIN_AWAKE = 1 << 22   # ... and from this many while a block thread spins (awake():
#   a hand-off then costs ~30-40 us, not a wake of up to ~0.5 ms): ~50 us of one core. In-
#   process A/B, medians of 30 forwards after the 0.1 s gap, 2^25 / 2^22 / 2^20 (benchmarks/
#   README.md, section 60): GoogLeNet b1 21.03 / 18.81 / 19.41 ms (its 1x1 and 3x3 layers
#   at 14x14 and 7x7 hold 5-30M multiply-adds), ResNet-18 b1 16.44 / 15.86 / 16.02, ResNet-50
#   b1 37.69 / 37.48 / 37.60; VGG-16 b1 94.3 / 91.2 (16 rounds); batch 8 and the training
#   steps within their noise (GoogLeNet b8 102.3 / 96.8, ResNet-18 b8 80.9 / 81.8, LeNet
#   4.32 / 4.28, VGG-style 102.5 / 103.7)


def split_count(multiply_adds: int, same_bits: bool = False) -> int:
    """Threads to split one product of ``multiply_adds`` over: the :func:`workers` from
    ``SPLIT_MIN`` up, unless the caller is already one block of a parallel :func:`run`.

    ``same_bits``: the kernel computes the same bits however its work is split (the outer,
    direct and pointwise forwards: each output one sum in one order; the outer and direct
    dw: fixed parts of the batch added in one order); such work also splits from
    ``SPLIT_MIN_AWAKE`` while a block thread is awake. Whether a thread spins is timing, so
    a kernel whose sums depend on the split (a BLAS product whose kernel depends on its
    shape, a sum of each thread's share) keeps the size rule alone: its result must not
    change from run to run."""
    if inside_blocks() or multiply_adds < (min(SPLIT_MIN, SPLIT_MIN_AWAKE) if same_bits
                                           else SPLIT_MIN):
        return 1
    if multiply_adds < SPLIT_MIN and not awake():
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


def matmul_pair(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray,
                b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a1 @ b1, a2 @ b2)`` of 2-D operands: on two workers, each product whole on its own
    thread where both are large and within 2x of each other in multiply-adds (a fully
    connected layer's dw and dx); else one after the other by :func:`matmul`.

    Each thread then reads its own product's operands once, where :func:`matmul` splits
    each product and both threads read its shared operand (FC 4096 -> 512 at batch 128:
    backward 4.07 -> 3.72 ms, benchmarks/README.md section 62). Side by side, each result
    is the one-thread product.
    """
    sizes = [a.shape[0] * a.shape[1] * b.shape[1] for a, b in ((a1, b1), (a2, b2))]
    if min(sizes) * 2 < max(sizes) or split_count(min(sizes) * 2) != 2:
        return matmul(a1, b1), matmul(a2, b2)
    first, second = run(lambda i: np.matmul(a1, b1) if i == 0 else np.matmul(a2, b2), 2)
    return first, second


def scratch(name: str, size: int, dtype=np.float32) -> np.ndarray:
    """A private work array of ``size`` elements for the calling thread, reused by its
    next calls with the same ``name``.

    Kernels use it for block buffers (Winograd's transformed tiles and products, im2col's
    columns) that never leave the call: a fresh multi-megabyte array each call costs its
    page faults again (measured: a 1x128x112x112 Winograd forward 29.7 ms with fresh
    buffers, 24.9 ms without the faults). Never return it or keep it past the call.
    Per thread, so concurrent callers never share one.

    The thread's buffers are shared between names: a name whose own buffer is missing or
    too small takes over the smallest buffer no array refers to any more (no view of it is
    alive: each kernel's names are in use during its call only), and only where none is
    large enough is a new one allocated. Kept per name, the direct, Winograd, outer and
    1x1 kernels' buffers added up (ResNet-50 at batch 1: ~16 MB, benchmarks/README.md
    section 53), though one kernel runs at a time.
    """
    nbytes = size * np.dtype(dtype).itemsize
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
        with _lock:
            _scratches[threading.current_thread()] = bufs
    buf = bufs.get(name)
    if buf is None or buf.size < nbytes:
        buf = _take_free(bufs, name, nbytes)
    return buf[:nbytes].view(dtype)


def _take_free(bufs: dict, name: str, nbytes: int) -> np.ndarray:
    """The smallest of the thread's buffers (``bufs``: name -> uint8 array) of at least
    ``nbytes`` that nothing refers to, moved to ``name``; else a new one (replacing
    ``name``'s own, too small)."""
    best = None
    for other in bufs:
        # references: the table's and getrefcount's argument; each view alive adds one
        if bufs[other].size >= nbytes and sys.getrefcount(bufs[other]) == 2 and (
                best is None or bufs[other].size < bufs[best].size):
            best = other
    if best is None:
        # mapped apart from the heap: a long-lived buffer placed between the activations
        # there splits the free space they leave (ResNet-50 b8's first forward: +20 MB)
        buf = np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=np.uint8)
    else:
        buf = bufs.pop(best)
    bufs[name] = buf
    return buf


def release_scratch() -> int:
    """Drop every thread's scratch buffers (:func:`scratch`); returns the bytes released.

    They are kept for the next call of each kernel (no page faults again), so a process
    that ran a large input keeps that input's work arrays; this gives them back: the next
    calls allocate them anew. Safe while other threads compute: a kernel running holds its
    own reference to the buffer it got, which lives until its call ends. Used by
    ``benchmarks/memory.py`` to count the scratch in a network's first call.
    """
    with _lock:
        tables = list(_scratches.values())
    released = 0
    for bufs in tables:
        for name in list(bufs):
            buf = bufs.pop(name, None)
            released += buf.nbytes if buf is not None else 0
    return released
