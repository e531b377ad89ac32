"""Keep freed activation memory in the process while training (glibc's malloc settings).

Backward frees each layer's cache as soon as it is used (volnet.layers.base), so a
training step ends with most of its activation memory free at the top of the heap.
glibc then gives it back to the operating system (its trim threshold follows the
largest array freed so far), and the next forward takes it again, one page fault per
4 KB: the LeNet-5 training step took 7.6 ms instead of 5.1 on one thread
(benchmarks/README.md, seventh round). Setting the thresholds once keeps arrays up to
32 MB on the heap and keeps up to ``TRIM_BYTES`` of free heap in the process, as the
dynamic thresholds would after their first adjustment, but without trimming what the
next step reuses. Arrays above 32 MB are mapped and unmapped per call either way.

Inference frees the same way: the plan (volnet.layers.inference_plan) releases each
activation once its last reader ran, and ResNet-50 at batch 1 took 1,536 page faults per
forward (6 MB faulted in again each call) where the thresholds leave none.

Applied at the first backward or the first inference plan of the process, only with glibc,
and never when the user set malloc's thresholds (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters (malloc.h)
MMAP_BYTES = 32 * 2**20        # glibc's largest dynamic mmap threshold (64-bit)
TRIM_BYTES = 256 * 2**20       # free heap kept before trimming
_state = {"done": False}


def user_settings() -> bool:
    """Whether the user tuned glibc's malloc through the environment."""
    return "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        name.startswith("MALLOC_") and name.endswith("_") for name in os.environ)


def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when they are in effect (set now or
    before), False without glibc or when the user's settings stand."""
    if _state["done"]:
        return _state["done"] == "set"
    _state["done"] = "skipped"
    if user_settings():
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):      # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES):
        _state["done"] = "set"
    return _state["done"] == "set"
