"""Gradient checks of Conv2d, MaxPool2d, AvgPool2d and a small block on Hypothesis-drawn
hyperparameters (stride 1-3, padding 0-2, dilation 1-3, groups, odd sizes, batch 1, windows
that exactly fill the padded input), input and every parameter, float64."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_cases import gradient_errors, randomise

import volnet as vn

TOLERANCE = 1e-6
FEW = settings(max_examples=25)


def _size(draw, k, p, d):
    smallest = max(1, d * (k - 1) + 1 - 2 * p)         # the window exactly fills the padded input
    return draw(st.integers(smallest, smallest + 4))


@FEW
@given(st.data())
def test_conv2d_gradients(data):
    draw = data.draw
    groups = draw(st.sampled_from([1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    layer = vn.Conv2d(cin, cout, k, s, p, d, groups, bias=draw(st.booleans())).astype(np.float64)
    randomise(layer, np.random.default_rng(0))
    shape = (draw(st.integers(1, 2)), cin, _size(draw, k[0], p[0], d[0]), _size(draw, k[1], p[1], d[1]))
    x = np.random.default_rng(1).standard_normal(shape)
    assert layer.forward(x).shape == (shape[0],) + layer.output_shape(shape[1:])
    errors = gradient_errors(layer, x, training=False)
    assert max(errors.values()) < TOLERANCE, errors


@FEW
@given(st.data())
def test_pool_gradients(data):
    draw = data.draw
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = tuple(draw(st.integers(0, min(2, kk // 2))) for kk in k)
    ceil = draw(st.booleans())
    if draw(st.booleans()):
        layer = vn.MaxPool2d(k, s, p, ceil_mode=ceil)
    else:
        layer = vn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=draw(st.booleans()))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), _size(draw, k[0], p[0], 1),
             _size(draw, k[1], p[1], 1))
    size = int(np.prod(shape))
    x = np.random.default_rng(2).permutation(size).reshape(shape) / size - 0.5     # no max ties
    assert layer.forward(x).shape == (shape[0],) + layer.output_shape(shape[1:])
    errors = gradient_errors(layer, x, training=False)
    assert max(errors.values()) < TOLERANCE, errors


@FEW
@given(st.integers(1, 3), st.integers(3, 6), st.integers(3, 6), st.booleans())
def test_residual_block_gradients(n, h, w, training):
    block = vn.Residual(vn.Sequential(vn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), vn.BatchNorm2d(3),
                                      vn.Tanh(), vn.Conv2d(3, 3, 3, padding=1)),
                        shortcut=vn.Conv2d(2, 3, 1, stride=2), activation=vn.Sigmoid()).astype(np.float64)
    randomise(block, np.random.default_rng(3))
    x = np.random.default_rng(4).standard_normal((n, 2, h, w))     # >= 2x2 values per BN channel
    errors = gradient_errors(block, x, training)
    assert max(errors.values()) < TOLERANCE, errors
