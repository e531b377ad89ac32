"""NumPy's OpenBLAS thread count, read and set through its own C functions (ctypes).

threadpoolctl would do this too, but it lets only one Python thread (the first to set a
limit, while it lives) change OpenBLAS's count and silently ignores the others; volnet
sets the count from whichever thread runs a kernel (volnet.runtime.block_threads) or a
training loop, so it calls OpenBLAS directly. The libraries are looked up once.
"""

from __future__ import annotations

import ctypes

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")
_GETTERS = tuple(name.replace("_set_", "_get_") for name in _SETTERS)


_found: list = []


def _openblas_libraries() -> list[ctypes.CDLL]:
    if _found:
        return _found[0]
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
    _found.append(libraries)
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
