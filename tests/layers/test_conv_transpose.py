"""ConvTranspose2d beyond the shared layer table: PyTorch parity and gradient checks on
Hypothesis-drawn hyperparameters, the adjoint identity with Conv2d, bad-input messages,
and what the tools (summary, receptive field, to_fully_conv) say about it."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_cases import gradient_errors, randomise

import volnet as vn
from volnet.functional.conv import conv2d_forward
from volnet.functional.conv_transpose import conv_transpose2d_forward


def _draw_layer(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    op = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(2))
    hw = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    # padding may crop at most all but one output row/column
    p = tuple(draw(st.integers(0, max(0, min(2, ((hw[i] - 1) * s[i] + d[i] * (k[i] - 1) + op[i]) // 2))))
              for i in range(2))
    layer = vn.ConvTranspose2d(cin, cout, k, s, p, op, groups, draw(st.booleans()), d)
    return layer, (draw(st.integers(1, 3)), cin) + hw


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_matches_torch_forward_and_backward(data):
    layer, shape = _draw_layer(data.draw)
    layer = layer.astype(np.float64)
    randomise(layer, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    ref = torch.nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                   layer.padding, layer.output_padding, layer.groups,
                                   "bias" in layer.params, layer.dilation).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in layer.state_dict().items()})
    xt = torch.tensor(x, requires_grad=True)
    out_t = ref(xt)
    out = layer.forward(x, cache=True)
    assert out.shape == tuple(out_t.shape) == (shape[0],) + layer.output_shape(shape[1:])
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(layer.backward(dout), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_gradients_match_central_differences(data):
    layer, shape = _draw_layer(data.draw)
    layer = layer.astype(np.float64)
    randomise(layer, np.random.default_rng(2))
    x = np.random.default_rng(3).standard_normal((1,) + shape[1:])
    errors = gradient_errors(layer, x, training=False)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("stride, padding, dilation, groups", [((1, 1), (1, 1), (1, 1), 1),
                                                               ((2, 3), (1, 0), (1, 2), 2),
                                                               ((1, 1), (0, 2), (2, 1), 1)])
def test_adjoint_of_conv2d(stride, padding, dilation, groups):
    """<conv(x), y> == <x, conv^T(y)> for the same weight: the transposed convolution's definition."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 6 // groups, 3, 3))
    x = rng.standard_normal((2, 6, 9, 8))
    cx, _ = conv2d_forward(x, w, None, stride, padding, dilation, groups, keep_cache=False)
    y = rng.standard_normal(cx.shape)
    sizes = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * 2 - 1) % stride[i] for i in range(2)]
    ty, _ = conv_transpose2d_forward(y, w, None, stride, padding, tuple(sizes), dilation, groups,
                                     keep_cache=False)
    assert ty.shape == x.shape       # output_padding recovers the exact input size
    np.testing.assert_allclose(np.sum(cx * y), np.sum(x * ty), rtol=1e-12)


def test_float32_uses_float32_and_stays_close():
    layer = vn.ConvTranspose2d(8, 32, 3, padding=1, rng=0)     # stride 1, many channels: conv path
    x = np.random.default_rng(5).standard_normal((2, 8, 5, 5)).astype(np.float32)
    out = layer.forward(x, training=True)
    ref = layer.copy().astype(np.float64).forward(x.astype(np.float64))
    assert out.dtype == np.float32 and layer.backward(np.ones_like(out)).dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build, error, fragment", [
    (lambda: vn.ConvTranspose2d(2, 3, 3, stride=2, output_padding=2), vn.ConfigError,
     "output_padding (2, 2) must be >= 0 and smaller than the stride (2, 2) or the dilation"),
    (lambda: vn.ConvTranspose2d(2, 3, 3, output_padding=-1), vn.ConfigError, "output_padding"),
    (lambda: vn.ConvTranspose2d(4, 3, 3, groups=2), vn.ConfigError,
     "groups=2 must divide both in_channels (4) and out_channels (3)"),
    (lambda: vn.ConvTranspose2d(2, 3, 0), vn.ConfigError, "kernel_size must be >= 1"),
    (lambda: vn.ConvTranspose2d(2, 3, 3, stride=0), vn.ConfigError, "stride must be >= 1"),
    (lambda: vn.ConvTranspose2d(2.0, 3, 3), vn.ConfigError, "in_channels must be an int"),
])
def test_bad_hyperparameters(build, error, fragment):
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, vn.VolnetError) and fragment in str(info.value)


def test_bad_inputs_name_the_layer():
    net = vn.Sequential(vn.ConvTranspose2d(3, 2, 4, stride=2, padding=1))
    with pytest.raises(vn.ShapeError, match=r"ConvTranspose2d\(3, 2, .*\) at 0 expected 3 channels, got 1"):
        net.forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(vn.ShapeError, match="4-D input"):
        net.forward(np.zeros((3, 4, 4), np.float32))
    with pytest.raises(vn.ShapeError, match=r"\(W - 1\)S - 2P \+ D\(F - 1\) \+ output_padding \+ 1 = "
                                            r"\(1 - 1\)\*1 - 2\*2 \+ 1\*\(3 - 1\) \+ 0 \+ 1 = -1 < 1"):
        vn.ConvTranspose2d(1, 1, 3, padding=2).output_shape((1, 1, 1))


def test_state_dict_keys_and_layout_are_pytorchs():
    layer = vn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    ref = torch.nn.ConvTranspose2d(6, 4, (3, 2), groups=2)
    assert {k: v.shape for k, v in layer.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {"weight": (6, 2, 3, 2), "bias": (4,)}


def test_summary_output_size_and_receptive_field():
    gen = vn.Sequential(vn.ConvTranspose2d(10, 8, 7), vn.ReLU(),
                        vn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
                        vn.ConvTranspose2d(4, 1, 3, stride=2, padding=1, output_padding=1))
    table = vn.summary(gen, (10, 1, 1))
    rows = {r["name"]: r for r in table.rows}
    # (W - 1)S - 2P + D(F - 1) + output_padding + 1 by hand: 7, 14, 28
    assert [rows[n]["output"] for n in ("0", "2", "3")] == ["7x7x8", "14x14x4", "28x28x1"]
    assert rows["2"]["K"] == 4 and rows["2"]["F"] == (4, 4) and rows["2"]["S"] == (2, 2)
    assert rows["2"]["macs"] == 7 * 7 * 8 * 4 * 16        # each input unit scatters one filter copy
    assert rows["2"]["params"] == 8 * 4 * 16 + 4
    # fields by hand: 1 + 6 = 7; then floor(3/2) = 1 more unit at jump 1 -> 8, jump 1/2;
    # then floor(2/2) = 1 more unit at jump 1/2 -> 8.5, rounded up to 9, jump 1/4
    assert rows["0"]["receptive_field"] == (7, 7) and rows["0"]["jump"] == (1, 1)
    assert rows["2"]["receptive_field"] == (8, 8) and rows["2"]["jump"] == (0.5, 0.5)
    assert rows["3"]["receptive_field"] == (9, 9) and rows["3"]["jump"] == (0.25, 0.25)


def test_to_fully_conv_passes_it_through():
    net = vn.Sequential(vn.Conv2d(1, 4, 3, stride=2, padding=1, rng=0), vn.ReLU(),
                        vn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, rng=1),
                        vn.Conv2d(4, 8, 4, stride=4, rng=2), vn.Flatten(), vn.Linear(8 * 7 * 7, 10, rng=3))
    fc = vn.to_fully_conv(net, (1, 28, 28))
    assert isinstance(fc[2], vn.ConvTranspose2d) and fc.stride == (4, 4) and not fc.exact
    x = np.random.default_rng(6).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(fc.forward(x).reshape(2, 10), net.forward(x), rtol=1e-5, atol=1e-5)
    up = vn.Sequential(vn.ConvTranspose2d(1, 2, 2, stride=2), vn.Flatten(), vn.Linear(2 * 8 * 8, 3))
    with pytest.raises(vn.ConfigError, match="upsamples more than it downsamples"):
        vn.to_fully_conv(up, (1, 4, 4))
