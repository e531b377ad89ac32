"""How a compiled kernel is launched: on all of numba's threads, or on the calling
thread alone when the work is too small to pay for waking the others.

A parallel region costs a fork and a join (microseconds on an idle machine, and
milliseconds when other processes hold the cores); memory-bound passes over fewer
than ``PARALLEL_MIN`` elements run faster on one thread.
"""

from __future__ import annotations

import numba

PARALLEL_MIN = 1 << 18      # elements; about 1 MB of float32, ~0.1 ms for one pass


def run(kernel, size: int, *args):
    """Call ``kernel(*args)``, single-threaded when ``size`` (elements touched) is small."""
    if size >= PARALLEL_MIN:
        return kernel(*args)
    threads = numba.get_num_threads()
    if threads == 1:
        return kernel(*args)
    numba.set_num_threads(1)
    try:
        return kernel(*args)
    finally:
        numba.set_num_threads(threads)
