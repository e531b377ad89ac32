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


MIN_TIMED_S = 1.0   # per side: short calls get more repeats (up to MAX_REPEATS), so a
MAX_REPEATS = 61    # 10 ms row is not decided by a few calls that a neighbour's burst hit


def time_pair(volnet_fn, torch_fn, repeats: int, warmup: int = 1) -> Pair:
    """Warm both up, then at least ``repeats`` rounds alternating which side runs first
    (more for short calls: enough for MIN_TIMED_S of timed calls per side)."""
    start = time.perf_counter()
    for _ in range(warmup):
        volnet_fn()
        torch_fn()
    per_round = (time.perf_counter() - start) / max(warmup, 1) / 2
    if per_round > 0:
        repeats = max(repeats, min(MAX_REPEATS, int(MIN_TIMED_S / per_round) + 1))
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
