"""How a compiled kernel is launched: split over numba's threads, or on the calling
thread alone when the work is too small to pay for waking the others; and the one
helper (:func:`run`) every NumPy-level module calls a compiled kernel through.

Every kernel is written once, with ``prange``, and :func:`kernel` turns it into two
numba dispatchers: a serial one (``prange`` acts as ``range``) and a parallel one,
each compiled on its first call and cached on disk. A small model (LeNet) then never
compiles a parallel version: those take ~3x longer to compile (measured 14 s against
4.4 s for LeNet's kernels on the busy 2-core machine), and compile time counts
toward a fresh install's first ``volnet train lenet5``.

A parallel region costs a fork and a join: microseconds on an idle machine, but
milliseconds when other processes hold the cores (the second thread waits for a time
slice). Measured on the shared 2-core machine (benchmarks/README.md): LeNet and CIFAR
training steps ran 10-25% *slower* than the NumPy path with 2-thread kernels from 256K
elements up, and 20-35% faster with every kernel on one thread. Memory-bound passes
gain at most ~1.5x from a second core, so only arrays of ``PARALLEL_MIN`` elements
(16 MB of float32: ResNet/VGG activations) are split.
"""

from __future__ import annotations

import importlib
import sys
import types

from volnet.runtime import block_threads

PARALLEL_MIN = 1 << 22      # elements; 16 MB of float32, a few ms for one pass


class Kernel:
    """A serial and a parallel dispatcher of one ``prange`` function, and (made on first
    use, for :func:`run_planes`) a serial one that releases the GIL."""

    def __init__(self, func, fastmath=False):
        from numba import njit  # here, not at import: run() callers must not import numba

        self.__doc__, self.__name__ = func.__doc__, func.__name__
        self._func = func
        self._nogil = None
        self.serial = njit(cache=True, fastmath=fastmath)(_renamed(func, "serial"))
        self.parallel = njit(parallel=True, cache=True, fastmath=fastmath)(
            _renamed(func, "parallel"))

    def __call__(self, *args):
        return self.serial(*args)

    @property
    def one_thread(self):
        """The serial variant without the GIL, so block threads run pieces side by side.
        Only run_planes' kernels get it: giving back and retaking the GIL on every small
        call can wait on another busy Python thread. Its own name and cache files: numba's
        cache index does not record ``nogil``, so under "serial" it would load a GIL-holding
        build."""
        if self._nogil is None:
            from numba import njit
            self._nogil = njit(cache=True, nogil=True)(_renamed(self._func, "one_thread"))
        return self._nogil


def _renamed(func, suffix):
    """A copy of ``func`` under another qualified name: numba names its cache files
    after it, so the two variants never load each other's machine code."""
    copy = types.FunctionType(func.__code__, func.__globals__, f"{func.__name__}_{suffix}",
                              func.__defaults__, func.__closure__)
    copy.__qualname__ = f"{func.__qualname__}_{suffix}"
    copy.__module__, copy.__doc__ = func.__module__, func.__doc__
    return copy


def on_threads(k, *args):
    """``k``'s parallel variant, after stopping the block threads' spin (numba's threads
    need the cores); its serial one inside a block of ``block_threads.run`` (a Concat's
    branch on a block thread: two ``prange`` regions started at once oversubscribe the
    cores, and numba's workqueue layer aborts the process on it)."""
    if block_threads.inside_blocks():
        return k.serial(*args)
    block_threads.stop_spinning()
    return k.parallel(*args)


def kernel(func=None, *, fastmath=False):
    """Decorator for a compiled kernel written with ``prange`` (``@kernel`` or
    ``@kernel(fastmath=True)``)."""
    if func is None:
        return lambda f: Kernel(f, fastmath)
    return Kernel(func, fastmath)


PLANES_SPLIT_MIN = 1 << 17     # elements from which run_planes splits to awake block threads
#                                (~0.1 ms of one pass; such a hand-off costs ~30 us, section 59)
PLANES_SPLIT_ASLEEP = 1 << 21  # ... and to sleeping ones (~1.5 ms; waking one, up to ~0.5 ms)


def run_planes(module: str, name: str, size: int, planes: int, args_of):
    """Call compiled kernel ``name`` of ``module`` whose work is independent per plane
    (row of its arrays' first axis) on pieces of the ``planes``: ``args_of(p0, p1)`` gives
    its arguments for planes [p0, p1). The pieces go to volnet's block threads, each
    running the serial variant without the GIL (:attr:`Kernel.one_thread`; numba's parallel
    variant of the pooling kernels ran 3x slower loaded from its cache, section 49), from ``PLANES_SPLIT_MIN`` elements
    (``size``) while a block thread is awake (``block_threads.awake``), from
    ``PLANES_SPLIT_ASLEEP`` otherwise; else one call on the calling thread. The same
    arithmetic per plane either way, so the same bits."""
    k = _kernel(module, name)
    split = size >= PLANES_SPLIT_ASLEEP or (size >= PLANES_SPLIT_MIN and block_threads.awake())
    count = min(planes, block_threads.workers()) if split else 1
    fn = k.one_thread                      # made here, not by two block threads at once
    if count <= 1:
        fn(*args_of(0, planes))
        return
    edges = [planes * i // count for i in range(count + 1)]
    block_threads.run(lambda i: fn(*args_of(edges[i], edges[i + 1])), count)


def _kernel(module: str, name: str):
    loaded = sys.modules.get(module)       # import_module's own lookup costs ~4 us a call
    k = getattr(loaded, name, None)
    if k is None:
        # not imported yet, or still being imported by another thread (two block threads
        # running their first epilogue at once): import_module waits for that import,
        # where the module found in sys.modules has no kernels yet
        k = getattr(importlib.import_module(module), name)
    return k


def run(module: str, name: str, size: int, *args):
    """Call compiled kernel ``name`` of ``module`` (a dotted module name, imported on first
    use: it imports numba, so callers call this only once ``backend.compiled()`` said yes),
    split over threads only when ``size`` (elements touched) is at least ``PARALLEL_MIN``.

    Example (only with numba installed):
        ``run("volnet.functional.compiled.activation", "relu_forward", x.size, x, out, mask)``
    """
    k = _kernel(module, name)
    if size >= PARALLEL_MIN:
        return on_threads(k, *args)
    return k.serial(*args)
