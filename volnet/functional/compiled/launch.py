"""How a compiled kernel is launched: on all of numba's threads, or on the calling
thread alone when the work is too small to pay for waking the others.

A parallel region costs a fork and a join: microseconds on an idle machine, but
milliseconds when other processes hold the cores (the second thread waits for a time
slice). Measured on the shared 2-core machine (benchmarks/README.md): LeNet and CIFAR
training steps ran 10-25% *slower* than the NumPy path with 2-thread kernels from 256K
elements up, and 20-35% faster with every kernel on one thread. Memory-bound passes
gain at most ~1.5x from a second core, so only arrays of ``PARALLEL_MIN`` elements
(16 MB of float32: ResNet/VGG activations) are split.
"""

from __future__ import annotations

import numba

PARALLEL_MIN = 1 << 22      # elements; 16 MB of float32, a few ms for one pass


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
