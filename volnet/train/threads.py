"""Set how many threads NumPy's BLAS (OpenBLAS) uses, at run time, without extra packages.

Why: on a machine whose cores are busy, OpenBLAS worker threads spin-wait for
each other. Measured here (2 cores, load ~10): 20 LeNet-5 training batches
took 0.7 s with one BLAS thread and 7.0 s with two. ``volnet train`` therefore
uses one BLAS thread unless told otherwise (``--threads`` or OMP_NUM_THREADS).
"""

from __future__ import annotations

import ctypes
import os

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = tuple(name.replace("_set_", "_get_") for name in _SETTERS)


def _openblas_libraries() -> list[ctypes.CDLL]:
    import numpy  # noqa: F401 - makes sure NumPy's BLAS is loaded

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:      # not Linux: leave the thread count alone
        return []
    libraries = []
    for path in sorted(paths):
        try:
            libraries.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libraries


def blas_threads() -> int | None:
    """Threads OpenBLAS uses now, or None when it cannot be found."""
    for lib in _openblas_libraries():
        for name in _GETTERS:
            if hasattr(lib, name):
                return int(getattr(lib, name)())
    return None


def set_blas_threads(count: int) -> bool:
    """Use ``count`` BLAS threads from now on; False when OpenBLAS cannot be found."""
    done = False
    for lib in _openblas_libraries():
        for name in _SETTERS:
            if hasattr(lib, name):
                getattr(lib, name)(ctypes.c_int(int(count)))
                done = True
                break
    return done


def default_threads() -> int | None:
    """1 unless the user chose a count through OMP_NUM_THREADS or OPENBLAS_NUM_THREADS."""
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")):
        return None
    return 1
