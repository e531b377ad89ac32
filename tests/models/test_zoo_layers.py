"""Layers the zoo added: FlatConcat (flat keys), SideBranch (aux heads), ChannelAffine, Scale."""

import numpy as np
import pytest

import volnet as vn
from volnet.tools.gradcheck import check_gradients, numerical_gradient


def test_flat_concat_keys_and_gradients(rng):
    split = vn.FlatConcat({
        "x": vn.Sequential({"branch3x3_2a": vn.Conv2d(2, 2, (1, 3), padding=(0, 1), rng=2)}),
        "y": vn.Sequential({"branch3x3_2b": vn.Conv2d(2, 2, (3, 1), padding=(1, 0), rng=3)}),
    })
    block = vn.FlatConcat({
        "a": vn.Sequential({"branch1x1": vn.Conv2d(3, 2, 1, rng=0)}),
        "b": vn.Sequential({"branch3x3_1": vn.Conv2d(3, 2, 1, rng=1), "": split}),
    }).astype(np.float64)
    assert [k for k in block.state_dict() if k.endswith("weight")] == [
        "branch1x1.weight", "branch3x3_1.weight", "branch3x3_2a.weight", "branch3x3_2b.weight"]
    assert block.output_shape((3, 5, 5)) == (6, 5, 5)
    errors = check_gradients(block, rng.standard_normal((2, 3, 5, 5)), rng=0)
    assert max(errors.values()) < 1e-6


def test_side_branch_gradient_includes_the_head(rng):
    head = vn.Sequential(vn.Flatten(), vn.Linear(12, 3, rng=0))
    tap = vn.SideBranch(head).astype(np.float64)
    x = rng.standard_normal((2, 3, 2, 2))
    up, aux_up = rng.standard_normal((2, 3, 2, 2)), rng.standard_normal((2, 3))

    def loss():   # main-path loss plus the auxiliary loss, each with a fixed upstream gradient
        out = tap.forward(x, training=True, cache=True)
        return float(np.sum(out * up) + np.sum(tap.output * aux_up))

    tap.forward(x, training=True)
    tap.grad = aux_up
    dx = tap.backward(up)
    dw = head[1].grads["weight"].copy()
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dw, numerical_gradient(loss, head[1].params["weight"]),
                               rtol=1e-6, atol=1e-9)


def test_side_branch_is_identity_at_inference(rng):
    tap = vn.SideBranch(vn.Sequential(vn.Flatten(), vn.Linear(12, 3)))
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    assert tap.forward(x) is x and tap.output is None
    assert list(tap.state_dict()) == ["1.weight", "1.bias"]     # head keys spliced
    with pytest.raises(vn.StateError):
        tap.backward(x)


def test_channel_affine_is_torchvisions_transform_input(rng):
    import torch
    from zoo_torch_refs import transform_input

    layer = vn.ChannelAffine.imagenet_to_unit_range()
    x = rng.standard_normal((2, 3, 4, 5))
    expected = transform_input(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)
    assert layer.state_dict() == {}
    assert check_gradients(layer, x, rng=0)["input"] < 1e-6
    with pytest.raises(vn.ShapeError, match="expects"):
        layer.forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(vn.ConfigError, match="in_channels=3"):
        vn.models.googlenet(in_channels=1, transform_input=True)


def test_scale_is_a_constant_factor_with_its_gradient(rng):
    layer = vn.Scale(0.17)
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(layer.forward(x), x * 0.17)
    assert layer.forward(x.astype(np.float32)).dtype == np.float32
    assert layer.state_dict() == {} and layer.output_shape((3, 4, 5)) == (3, 4, 5)
    assert check_gradients(layer, x, rng=0)["input"] < 1e-6
    rebuilt = vn.io.architecture.build_layer(vn.io.architecture.layer_config(layer), np.float64)
    assert isinstance(rebuilt, vn.Scale) and rebuilt.factor == 0.17
    with pytest.raises(vn.ConfigError, match="finite"):
        vn.Scale(float("nan"))
