"""Upsample beyond the shared layer table: PyTorch parity (align_corners=False) and gradient
checks on Hypothesis-drawn sizes, scale factors and modes, hand-computed values, bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_cases import gradient_errors

import volnet as vn


def _draw(draw):
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    hw = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    if draw(st.booleans()):
        kwargs = {"size": (draw(st.integers(1, 9)), draw(st.integers(1, 9)))}
    else:
        factors = st.one_of(st.integers(1, 3), st.sampled_from([0.5, 1.5, 1.75, 2.5, 3.0]))
        f = (draw(factors), draw(factors))
        if min(int(n * x) for n, x in zip(hw, f)) < 1:
            f = (2, 2)
        kwargs = {"scale_factor": f}
    return mode, kwargs, (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + hw


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_matches_torch_forward_and_backward(data):
    mode, kwargs, shape = _draw(data.draw)
    layer = vn.Upsample(mode=mode, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    ref = torch.nn.Upsample(mode=mode, align_corners=False if mode == "bilinear" else None, **kwargs)
    xt = torch.tensor(x, requires_grad=True)
    out_t = ref(xt)
    out = layer.forward(x, cache=True)
    assert out.shape == tuple(out_t.shape) == (shape[0],) + layer.output_shape(shape[1:])
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_gradients_match_central_differences(data):
    mode, kwargs, shape = _draw(data.draw)
    x = np.random.default_rng(1).standard_normal(shape)
    errors = gradient_errors(vn.Upsample(mode=mode, **kwargs), x, training=False)
    assert max(errors.values()) < 1e-6, errors


def test_hand_computed_values():
    x = np.array([[[[1.0, 3.0]]]])                              # one row, two columns
    np.testing.assert_array_equal(vn.Upsample(scale_factor=2).forward(x)[0, 0],
                                  [[1, 1, 3, 3], [1, 1, 3, 3]])
    # bilinear x2: pixel centres (dst + 0.5)/2 - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    np.testing.assert_allclose(vn.Upsample(scale_factor=(1, 2), mode="bilinear").forward(x)[0, 0],
                               [[1.0, 1.5, 2.5, 3.0]])


@pytest.mark.parametrize("kwargs, fragment", [
    ({}, "exactly one of size and scale_factor"),
    ({"size": 4, "scale_factor": 2}, "exactly one of size and scale_factor"),
    ({"scale_factor": 2, "mode": "bicubic"}, "mode must be one of ('nearest', 'bilinear')"),
    ({"size": (4, 0)}, "size must be a positive int"),
    ({"scale_factor": -2}, "scale_factor must be a positive int"),
    ({"size": 2.5}, "size must be a positive int"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(vn.ConfigError) as info:
        vn.Upsample(**kwargs)
    assert fragment in str(info.value)


def test_bad_inputs_name_the_layer():
    net = vn.Sequential(vn.Conv2d(1, 2, 1), vn.Upsample(scale_factor=0.25))
    with pytest.raises(vn.ShapeError, match=r"Upsample\(scale_factor=\(0.25, 0.25\)\) at 1: .* turns 3x3 "
                                            r"into 0x0"):
        net.forward(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(vn.ShapeError, match="4-D input"):
        vn.Upsample(scale_factor=2).forward(np.zeros((2, 3), np.float32))


def test_summary_and_receptive_field():
    net = vn.Sequential(vn.Conv2d(1, 2, 3, stride=2, padding=1), vn.Upsample(scale_factor=2, mode="bilinear"),
                        vn.Conv2d(2, 2, 3, padding=1))
    rows = {r["name"]: r for r in vn.summary(net, (1, 8, 8)).rows}
    assert rows["1"]["output"] == "8x8x2" and rows["1"]["params"] == 0
    # 3 (conv); bilinear adds one unit of jump 2 -> 5, jump 1; conv 3x3 adds 2 -> 7
    assert rows["1"]["receptive_field"] == (5, 5) and rows["1"]["jump"] == (1, 1)
    assert rows["2"]["receptive_field"] == (7, 7)


def test_checkpoint_rebuilds_transposed_conv_and_upsample(tmp_path):
    net = vn.Sequential(vn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, rng=0),
                        vn.Upsample(scale_factor=1.5, mode="bilinear"), vn.Upsample(size=(5, 7)))
    back = vn.load(vn.save(tmp_path / "net.safetensors", net))
    assert repr(back) == repr(net)
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), net.forward(x))
