"""A bounded busy wait outside the GIL, for volnet's block threads (block_threads.py).

On a virtual machine a core that sleeps is given back to the host, and waking it again
takes far longer than on bare metal. Measured on the 2-core VM (benchmarks/README.md,
section 59): handing a no-op block to a block thread that had been asleep for 0.1 ms
took 27 us, for 1 ms 241 us, for 3 ms or more 0.43-0.49 ms; 25 us back to back. A layer
that splits its work pays that wait whenever the layer before ran on one thread for
more than a fraction of a millisecond (the small passes below SPLIT_MIN, Python glue,
a loss). So a block thread, and a caller waiting for its helpers, first spins here
for a bounded time (``block_threads.SPIN_US``) watching a flag, and only then sleeps
on its lock: onnxruntime's and OpenMP's spin-then-sleep.

:func:`spin` reads the flag with an atomic load (the compiler may not hoist it out of the
loop) and runs ``pause`` between reads on x86; the time limit is counted in the CPU's
cycle counter, calibrated once against ``time.perf_counter`` (:func:`cycles_per_us`).
"""

from __future__ import annotations

import functools
import platform
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_MACHINE = platform.machine().lower()
_X86 = _MACHINE in ("x86_64", "amd64", "i386", "i686")
# where llvm.readcyclecounter is a running counter readable in user space (riscv64's rdcycle
# traps under Linux 6.6+, 32-bit ARM's and others' read a constant 0): elsewhere no spin
_COUNTER = _X86 or _MACHINE in ("aarch64", "arm64", "ppc64le")


@intrinsic
def _load_acquire(typingctx, flag):
    """``flag[0]`` (an int64 array) by an atomic acquire load: re-read on every call."""
    sig = types.int64(flag)

    def codegen(context, builder, signature, args):
        ptr = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def store_release(typingctx, flag, value):
    """``flag[0] = value`` (an int64 array) by an atomic release store: seen by another
    thread's acquire load after every write this thread made before it."""
    sig = types.void(flag, types.int64)

    def codegen(context, builder, signature, args):
        ptr = context.make_array(signature.args[0])(context, builder, args[0]).data
        builder.store_atomic(args[1], ptr, "release", 8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``: rdtsc on x86)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def _pause(typingctx):
    """x86's ``pause`` (a spin-wait hint: frees the core's shared resources, saves power);
    nothing elsewhere."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def raise_flag(flag):  # pragma: no cover - compiled
    """``flag[0] = 1`` by a release store when ``flag`` (int64) is not empty: what a compiled
    kernel does first to tell waiting threads it runs, outside the GIL
    (block_threads.ENTERED)."""
    if flag.size:
        store_release(flag, 1)


@njit(nogil=True, cache=True)
def _spin(flag, cycles, signal, value, then, then_cycles):  # pragma: no cover - compiled
    if signal.size:
        store_release(signal, value)
    start = _cycles()
    while True:
        seen = _load_acquire(flag)
        if seen != 0:
            if seen == value and then.size:
                start = _cycles()
                while _load_acquire(then) == 0 and _cycles() - start < then_cycles:
                    _pause()
            return seen
        if _cycles() - start >= cycles:
            return 0
        for _ in range(8):
            _pause()


@functools.lru_cache(maxsize=1)
def cycles_per_us() -> float:
    """Cycle-counter ticks per microsecond, measured once over ~2 ms; 0.0 where there is no
    running counter (then :func:`spin` does not spin)."""
    if not _COUNTER:
        return 0.0
    _cycles_now()                              # compiled (or loaded) before timing
    t0, c0 = time.perf_counter(), _cycles_now()
    t1 = t0
    while t1 - t0 < 0.002:                     # ~2 ms of counting
        t1 = time.perf_counter()
    c1 = _cycles_now()
    rate = (c1 - c0) / ((t1 - t0) * 1e6)
    return rate if rate > 0 else 0.0


def prepare() -> None:
    """Compiles (or loads) the spin and calibrates the counter now, on the calling thread:
    done when the first block threads start, so no block thread's first wait does it."""
    rate = cycles_per_us()
    if rate > 0:
        _spin(np.ones(1, np.int64), 0, _NO_SIGNAL, 0, _NO_SIGNAL, 0)


@njit(nogil=True, cache=True)
def _cycles_now():  # pragma: no cover - compiled
    return _cycles()


_NO_SIGNAL = np.zeros(0, np.int64)


def spin(flag: np.ndarray, microseconds: float, signal: np.ndarray | None = None,
         value: int = 1, then: np.ndarray | None = None, then_us: float = 0.0) -> int:
    """Wait, busy and without the GIL, until ``flag[0]`` (an int64 array) is not 0 or
    ``microseconds`` have passed; returns the value seen (0: timed out).

    ``signal`` (an int64 array, or None): set ``signal[0] = value`` first, already outside
    the GIL, so that a thread spinning on it finds the GIL free when it wakes (set while
    holding it, the woken thread sleeps on the GIL until this one lets go, ~10 us here:
    benchmarks/README.md, section 60).

    ``then`` (an int64 array, or None): when the flag turns to ``value``, go on spinning
    until ``then[0]`` is not 0 too, or ``then_us`` more have passed (a block thread handed a
    job waits so for its caller's kernel to start: block_threads.ENTERED)."""
    rate = cycles_per_us()
    if microseconds <= 0 or rate <= 0:
        if signal is not None:
            signal[0] = value
        return int(flag[0])
    return int(_spin(flag, int(microseconds * rate),
                     _NO_SIGNAL if signal is None else signal, value,
                     _NO_SIGNAL if then is None else then, int(then_us * rate)))
