"""The layer-list grammar: what it builds (hand-computed volumes and counts) and what it refuses."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from volnet.errors import ConfigError
from volnet.layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Tanh
from volnet.web.netspec import MAX_PARAMS, parse_net


def test_convnetjs_style_list_builds_the_layers_it_names():
    net = parse_net("conv 8 5 pad2, relu, pool 2, conv 16 5, relu, pool 2, fc 10")
    kinds = [type(layer) for layer in net]
    assert kinds == [Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, Flatten, Linear]
    # 28 -(5x5 pad 2)-> 28 -pool-> 14 -(5x5)-> 10 -pool-> 5; 16*5*5 = 400 inputs to the fc
    assert net.output_shape((1, 28, 28)) == (10,)
    assert net[3].output_shape((8, 14, 14)) == (16, 10, 10)
    assert net.num_params() == (25 + 1) * 8 + (8 * 25 + 1) * 16 + (400 + 1) * 10


@pytest.mark.parametrize("spelling", ["conv 4 3 stride2 pad1", "conv 4 3 s2 p1", "conv 4 3 stride=2 pad=1",
                                      "CONV 4 3 stride 2 pad 1", "conv 4 3 pad1 stride2"])
def test_option_spellings_agree(spelling):
    conv = parse_net(f"{spelling}; fc 10")[0]
    assert (conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == (4, (3, 3), (2, 2), (1, 1))
    assert conv.output_shape((1, 28, 28)) == (4, 14, 14)   # (28 - 3 + 2)/2 + 1 = 14


def test_other_layers_and_separators():
    net = parse_net("conv 4 3\ntanh\navgpool 2 stride 2; dropout 0.25, fc 32, relu, fc 10")
    assert [type(layer) for layer in net] == [Conv2d, Tanh, AvgPool2d, Dropout, Flatten, Linear,
                                             ReLU, Linear]
    assert net[3].drop_prob == 0.25
    assert net.output_shape((1, 28, 28)) == (10,)   # (28-3+1)=26 -> 13; 4*13*13 = 676 -> 32 -> 10


def test_same_spec_same_seed_same_weights():
    a, b = parse_net("conv 4 3, fc 10", seed=3), parse_net("conv 4 3, fc 10", seed=3)
    c = parse_net("conv 4 3, fc 10", seed=4)
    np.testing.assert_array_equal(a[0].params["weight"], b[0].params["weight"])
    assert not np.array_equal(a[0].params["weight"], c[0].params["weight"])


@pytest.mark.parametrize("spec, words", [
    ("", "empty"),
    ("   ,  ", "empty"),
    ("conv 8 5 pad2, relu, pool 2", "end with 'fc 10'"),
    ("fc 12", "end with 'fc 10'"),
    ("conv 8", "item 1 'conv 8': expected 'conv K F'"),
    ("conv eight 5, fc 10", "filters must be a whole number"),
    ("conv 8 5 pad9, fc 10", "pad must be between 0 and 4"),
    ("conv 100 3, fc 10", "filters must be between 1 and 64"),
    ("conv 8 5 wobble, fc 10", "unknown option 'wobble'"),
    ("pool 0, fc 10", "size must be between 1 and 9"),
    ("fc 10, conv 4 3, fc 10", "put conv and pool layers before fc"),
    ("conv 8 9, pool 4, conv 8 9, fc 10", "item 3 'conv 8 9' does not fit the 8x5x5 volume"),
    ("relu 3, fc 10", "'relu' takes no arguments"),
    ("dropout 1.5, fc 10", "drop probability"),
    ("fc 10 20", "takes one number"),
    ("softmaxx, fc 10", "unknown layer 'softmaxx'"),
    ("conv 64 3 pad1, conv 64 3 pad1, fc 1024, fc 10", "more than the demo's limit"),
    ("relu, " * 20 + "fc 10", "the limit is 16"),
    ("fc 10" + " " * 500, "characters; the limit is 400"),
])
def test_mistakes_name_the_item_and_the_fix(spec, words):
    with pytest.raises(ConfigError) as info:
        parse_net(spec)
    assert words in str(info.value)


def test_parameter_limit_is_checked_before_allocating():
    # 64 x 28 x 28 = 50,176 inputs x 1,000 units would be 50 M weights (200 MB); refused up front.
    with pytest.raises(ConfigError, match="50,176 inputs x 1000 outputs"):
        parse_net("conv 64 3 pad1, fc 1000, fc 10")
    assert MAX_PARAMS == 1_000_000


WORDS = ["conv", "pool", "avgpool", "fc", "relu", "tanh", "dropout", "stride", "pad", "s2", "p1",
         "pad=2", "0", "1", "2", "3", "5", "9", "10", "64", "0.5", "-1", "x", ",", ";", "\n", "²"]


@given(st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join))
@settings(max_examples=150)
def test_any_layer_list_builds_a_10_class_net_or_raises_config_error(spec):
    try:
        net = parse_net(spec)
    except ConfigError as err:
        assert str(err)   # a message for the page
        return
    assert net.output_shape((1, 28, 28)) == (10,)
    assert net.num_params() <= MAX_PARAMS


def test_training_bytes_counts_huge_shapes_exactly():
    """A typed net on a huge declared input: the memory estimate is an exact Python integer
    (int64 products wrapped to small or negative numbers and understated the need)."""
    from volnet.web.netspec import training_bytes

    from volnet.layers import Sequential

    net = Sequential(ReLU())
    side = 2 ** 31
    # hand count: per example 2 * largest activation (no conv workspace) + the kept output
    per_example = 2 * (3 * side * side) + 3 * side * side
    assert training_bytes(net, (3, side, side), 1) == 4 * per_example
