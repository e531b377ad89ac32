"""Receptive fields: VGG-16's published values, hand-computed dilation/residual cases, and the
empirical field (pixels with a non-zero gradient) as an independent reference."""

import numpy as np
import pytest

import volnet as vn
from volnet.tools.receptive_field import Field, receptive_field, window_field


@pytest.fixture
def vgg16_net(monkeypatch):
    monkeypatch.setattr(vn.init, "he_normal", lambda s, r, dtype=np.float32: np.zeros(s, dtype))
    return vn.models.vgg16()


def test_vgg16_conv5_3_and_last_pool(vgg16_net):
    conv5_3 = receptive_field(vgg16_net, (3, 224, 224), layer="features.28")
    pool5 = receptive_field(vgg16_net, (3, 224, 224), layer="features.30")
    assert (conv5_3.size, conv5_3.jump) == ((196, 196), (16, 16))
    assert (pool5.size, pool5.jump) == ((212, 212), (32, 32))


def test_dilated_stack_grows_exponentially():
    # Yu & Koltun: 3x3 convs with dilation 1, 2, 4 see (2^(i+2) - 1)^2 pixels: 3, 7, 15
    net = vn.Sequential(vn.Conv2d(1, 1, 3, dilation=1), vn.Conv2d(1, 1, 3, dilation=2),
                        vn.Conv2d(1, 1, 3, dilation=4))
    sizes = [receptive_field(net, (1, 32, 32), layer=str(i)).size for i in range(3)]
    assert sizes == [(3, 3), (7, 7), (15, 15)]


def test_residual_takes_the_larger_branch():
    # stride-2 2x2 conv: field 2, jump 2; body two 3x3: 2 + 2*2 + 2*2 = 10; identity keeps 2
    body = vn.Sequential(vn.Conv2d(2, 2, 3, padding=1), vn.Conv2d(2, 2, 3, padding=1))
    net = vn.Sequential(vn.Conv2d(1, 2, 2, stride=2), vn.Residual(body))
    field = receptive_field(net, (1, 16, 16))
    assert (field.size, field.jump) == ((10, 10), (2, 2))


def test_rectangular_kernels_tracked_per_axis():
    net = vn.Sequential(vn.Conv2d(1, 1, (1, 7), padding=(0, 3)),
                        vn.Conv2d(1, 1, (7, 1), stride=(2, 1), padding=(3, 0)))
    field = receptive_field(net, (1, 17, 17))
    assert (field.size, field.jump) == ((7, 7), (2, 1))


def test_branches_with_different_jumps_are_rejected():
    net = vn.Concat(vn.Conv2d(1, 1, 1), vn.Conv2d(1, 1, 1, stride=2))
    with pytest.raises(vn.ShapeError, match="jump"):
        receptive_field(net, (1, 1, 1))


def test_unknown_layer_name_is_a_config_error():
    with pytest.raises(vn.ConfigError, match="no layer named"):
        receptive_field(vn.Sequential(vn.Conv2d(1, 1, 3)), (1, 8, 8), layer="features.3")


def test_window_field_start_matches_padding():
    # pad 1 centres the first 3x3 unit on pixel 0; a 2x2/2 pool then sits between pixels 0 and 1
    field = window_field(window_field(Field(), (3, 3), (1, 1), (1, 1)), (2, 2), (2, 2))
    assert field == Field(size=(4, 4), jump=(2, 2), start=(0.5, 0.5))


def _gradient_support(net, shape, unit):
    """Input pixels that influence one output unit (all weights positive, no ReLU, average
    pooling: max pooling would send the gradient to one winner per window)."""
    for _, layer in net.named_layers():
        if "weight" in layer.params:
            layer.params["weight"][...] = 1.0
    net.astype(np.float64)
    x = np.ones((1,) + shape)
    out = net.forward(x, cache=True)
    dout = np.zeros_like(out)
    dout[(0, 0) + unit] = 1.0
    dx = net.backward(dout)[0, 0]
    rows, cols = np.nonzero(dx)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("net", [
    vn.Sequential(vn.Conv2d(1, 1, 3), vn.AvgPool2d(2), vn.Conv2d(1, 1, 3, dilation=2),
                  vn.AvgPool2d(3, stride=2), vn.Conv2d(1, 1, 3)),
    vn.Sequential(vn.Conv2d(1, 1, 2, stride=2),
                  vn.Residual(vn.Sequential(vn.Conv2d(1, 1, 3), vn.Conv2d(1, 1, 3, dilation=2)),
                              vn.Sequential(vn.AvgPool2d(7, stride=1)))),
], ids=["chain", "residual"])
def test_field_equals_empirical_gradient_support(net):
    shape = (1, 40, 40)
    field = receptive_field(net, shape)
    out_h, out_w = net.output_shape(shape)[1:]
    assert _gradient_support(net, shape, (out_h // 2, out_w // 2)) == field.size


def test_vector_input_has_no_receptive_field():
    net = vn.Sequential(vn.Linear(8, 4))
    with pytest.raises(vn.ShapeError, match=r"\(C, H, W\)"):
        receptive_field(net, (8,))
