"""``summary`` on huge shapes: exact Python-int counts, never a negative or wrapped one, and no
list as long as a map side (issue 24: 3x2^31x2^31 printed a negative count, 3x2^40x2^40 printed
192, a Pad of 2^30 a negative count, and an adaptive pool built a 2^30-entry list)."""

import re
import tracemalloc

import pytest

import volnet as vn
from volnet.functional.pool import adaptive_bounds, adaptive_max_window
from volnet.layers.padding import ConstantPad2d
from volnet.tools.summary import summary


def test_input_of_3x2_31x2_31_counts_exactly():
    side = 2 ** 31
    s = summary(vn.Sequential(vn.Conv2d(3, 4, 3, bias=False)), (3, side, side))
    out = side - 2
    assert s.totals["activations"] == 3 * side * side + 4 * out * out   # 32,281,802,094,631,976,976
    assert s.totals["macs"] == 4 * out * out * 27
    assert "activations: 32,281,802,094,631,976,976 per example" in str(s)


def test_output_of_3x2_40x2_40_is_not_wrapped():
    s = summary(vn.Sequential(vn.Upsample(scale_factor=2 ** 20)), (3, 2 ** 20, 2 ** 20))
    assert s.rows[-1]["activations"] == 3 * 2 ** 80
    assert s.totals["activations"] == 3 * 2 ** 40 + 3 * 2 ** 80
    assert "3,626,777,458,847,186,059,001,856" in str(s)


def test_pad_of_2_30_counts_positive():
    s = summary(vn.Sequential(ConstantPad2d(2 ** 30), vn.Flatten()), (3, 8, 8))
    side = 8 + 2 ** 31
    assert s.rows[1]["activations"] == 3 * side * side
    assert s.rows[2]["shape"] == (3 * side * side,)     # Flatten's shape: no int64 wrap either
    assert all(row["activations"] > 0 for row in s.rows)
    assert not re.search(r"-[0-9]", str(s))   # no negative number anywhere in the table


@pytest.mark.parametrize("size", range(1, 41))
def test_adaptive_max_window_matches_the_windows(size):
    for out in range(1, 41):
        assert adaptive_max_window(size, out) == max(b - a for a, b in adaptive_bounds(size, out))


def test_adaptive_pool_on_a_huge_map_builds_no_list_of_its_side():
    net = vn.Sequential(vn.AdaptiveAvgPool2d(2 ** 22))
    tracemalloc.start()
    s = summary(net, (3, 2 ** 31, 2 ** 31))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20   # a list of 2^22 windows alone would take ~300 MB
    assert s.rows[-1]["receptive_field"] == (2 ** 9, 2 ** 9)
