"""benchmarks/memory.py: the peak RSS growth it records is what a call makes resident.

Checked against allocations of known size (no timing): a call that touches N MB grows by
about N MB; memory the process freed before the call (holes in the heap) is not counted
as room the call may fill for free; and the inference mode, run as the suite runs it (a
fresh process per library), records at least the one activation every forward must hold.
"""

import os

import numpy as np
import pytest

from benchmarks import memory

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                reason="needs Linux's resettable high-water mark")

MB = 2**20


def _touched(nbytes: int) -> np.ndarray:
    a = np.empty(nbytes, dtype=np.uint8)
    a[::4096] = 1               # one write per page: resident
    return a


def test_peak_growth_counts_what_the_call_touches():
    growth, exact = memory.peak_growth(lambda: _touched(64 * MB))
    assert exact
    assert 60 <= growth <= 72
    growth, _ = memory.peak_growth(lambda: None)
    assert growth < 4


def test_peak_growth_does_not_count_memory_freed_before_the_call_as_free():
    """Small blocks freed between live ones stay in the heap (not at its top, so free()
    never returns them); the measurement returns them first, so refilling them counts."""
    chunk, count = 64 * 1024, 512                    # below glibc's mmap threshold
    blocks = [_touched(chunk) for _ in range(2 * count)]
    del blocks[::2]                                  # 32 MB of holes
    growth, _ = memory.peak_growth(lambda: [_touched(chunk) for _ in range(count)])
    assert growth >= 0.8 * count * chunk / MB
    del blocks


@pytest.mark.parametrize("side", ["volnet", "torch"])
def test_inference_record_holds_the_largest_activation(side):
    """The VGG-style CIFAR net at batch 64: its first conv's output (64x32x32x32 float32,
    8 MB) is resident at some point of every forward, first and later."""
    rec = memory.peak_in_subprocess(side, 64, inference=True, model="vgg_cifar", size=32)
    assert rec["side"] == side and rec["exact_reset"]
    activation = 64 * 32 * 32 * 32 * 4 / MB
    assert rec["first_mb"] >= activation and rec["later_mb"] >= activation
