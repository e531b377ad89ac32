"""Interleaved timing: volnet and PyTorch alternate repeat by repeat, so drift from other
load on a shared machine hits both sides alike; medians summarise each side.

Neither library's threading is reconfigured; instead each timed call starts
after a short idle gap, so one library's spinning worker threads never run
during the other's measurement.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass


@dataclass
class Pair:
    """Median seconds per call of each side, and every sample."""

    volnet: float
    torch: float
    volnet_samples: list
    torch_samples: list


GAP_S = 0.1   # idle time before each timed call: OpenBLAS workers spin ~2**28 cycles after a
              # call and would steal a core from the other library's next call


def _once(fn) -> float:
    time.sleep(GAP_S)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_pair(volnet_fn, torch_fn, repeats: int, warmup: int = 1) -> Pair:
    """Warm both up, then ``repeats`` rounds alternating which side runs first."""
    for _ in range(warmup):
        volnet_fn()
        torch_fn()
    v, t = [], []
    for r in range(repeats):
        if r % 2 == 0:
            v.append(_once(volnet_fn))
            t.append(_once(torch_fn))
        else:
            t.append(_once(torch_fn))
            v.append(_once(volnet_fn))
    return Pair(statistics.median(v), statistics.median(t), v, t)


def time_one(fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds per call of a single function."""
    for _ in range(warmup):
        fn()
    return statistics.median(_once(fn) for _ in range(repeats))
