"""State dicts use PyTorch's dotted keys (checked against torch modules of the same structure),
round-trip exactly, and containers index, iterate and print as trees."""

import numpy as np
import pytest
import torch
from layer_cases import CASE_IDS, LAYER_CASES, _conv_bn_block, _nested, to_torch

import volnet as vn


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_keys_and_order_equal_torch(case):
    layer = case.layer()
    assert list(layer.state_dict()) == list(to_torch(layer).state_dict())
    assert [name for name, _, _ in layer.named_params()] == [n for n, _ in to_torch(layer).named_parameters()]


def test_key_names_of_nested_networks():
    net = vn.Sequential({"features": vn.Sequential(vn.Conv2d(3, 4, 3), vn.ReLU(), vn.MaxPool2d(2),
                                                   vn.Conv2d(4, 4, 3), vn.BatchNorm2d(4)),
                         "classifier": vn.Linear(4, 2)})
    assert list(net.state_dict()) == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
        "features.4.weight", "features.4.bias", "features.4.running_mean", "features.4.running_var",
        "features.4.num_batches_tracked", "classifier.weight", "classifier.bias"]
    assert list(vn.Sequential(vn.Linear(2, 2)).state_dict()) == ["0.weight", "0.bias"]
    block = vn.Residual(vn.Conv2d(2, 2, 1), shortcut=vn.Conv2d(2, 2, 1, bias=False),
                        body_name="", shortcut_name="downsample")
    assert list(block.state_dict()) == ["weight", "bias", "downsample.weight"]
    assert list(_conv_bn_block().state_dict())[:3] == ["body.0.weight", "body.1.weight", "body.1.bias"]


def test_buffers_are_not_parameters():
    bn = vn.BatchNorm2d(3)
    assert set(bn.params) == {"weight", "bias"}
    assert set(bn.buffers) == {"running_mean", "running_var", "num_batches_tracked"}
    assert bn.buffers["num_batches_tracked"].dtype == np.int64
    assert bn.num_params() == 6


@pytest.mark.parametrize("case", [c for c in LAYER_CASES if c.id in
                                  ("nested", "residual_projection_bn", "concat_inception", "batchnorm2d_train")],
                         ids=lambda c: c.id)
def test_round_trip_reproduces_outputs(case):
    src = case.layer(seed=3)
    src.forward(case.x(n=4), training=True)            # move running statistics off their defaults
    dst = case.layer(seed=4)
    result = dst.load_state_dict(src.state_dict())
    assert result == {"missing": [], "unexpected": []}
    for key, value in dst.state_dict().items():
        np.testing.assert_array_equal(value, src.state_dict()[key])
    x = case.x(n=3, seed=5)
    np.testing.assert_array_equal(dst.forward(x), src.forward(x))


def test_state_dict_is_a_copy_and_loading_copies():
    net = vn.Linear(2, 2, rng=0)
    state = net.state_dict()
    state["weight"][...] = 7.0
    assert not (net.params["weight"] == 7.0).any()
    net.load_state_dict(state)
    state["weight"][...] = 8.0
    np.testing.assert_array_equal(net.params["weight"], 7.0)


def test_load_casts_to_the_model_dtype_and_from_torch_tensors_as_arrays():
    net = vn.Conv2d(2, 3, 3, rng=0)
    ref = torch.nn.Conv2d(2, 3, 3).double()
    net.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    assert net.params["weight"].dtype == np.float32
    np.testing.assert_allclose(net.params["weight"], ref.weight.detach().numpy(), rtol=1e-7)


def test_non_strict_loads_the_matching_subset():
    net = vn.Sequential(vn.Linear(2, 3, rng=0), vn.ReLU(), vn.Linear(3, 1, rng=1))
    donor = vn.Sequential(vn.Linear(2, 3, rng=2))
    old_head = net[2].params["weight"].copy()
    report = net.load_state_dict({**donor.state_dict(), "head.weight": np.zeros(1)}, strict=False)
    assert report == {"missing": ["2.weight", "2.bias"], "unexpected": ["head.weight"]}
    np.testing.assert_array_equal(net[0].params["weight"], donor[0].params["weight"])
    np.testing.assert_array_equal(net[2].params["weight"], old_head)


def test_repr_prints_a_tree():
    net = vn.Sequential({"features": vn.Sequential(vn.Conv2d(3, 12, 3, padding=1), vn.ReLU(),
                                                   vn.MaxPool2d(2, stride=2)),
                         "head": vn.Residual(vn.Linear(4, 4), activation=vn.ReLU())})
    assert repr(net) == "\n".join([
        "Sequential(",
        "  (features): Sequential(",
        "    (0): Conv2d(3, 12, kernel_size=(3, 3), padding=(1, 1))",
        "    (1): ReLU()",
        "    (2): MaxPool2d(kernel_size=(2, 2), stride=(2, 2))",
        "  )",
        "  (head): Residual(",
        "    (body): Linear(in_features=4, out_features=4)",
        "    (activation): ReLU()",
        "  )",
        ")"])


def test_containers_index_iterate_and_name_paths():
    net = _nested()
    assert len(net) == 7 and isinstance(net[1], vn.Residual) and net["2"] is net[2]
    assert [type(layer).__name__ for layer in net][-2:] == ["Dropout", "Linear"]
    assert net[2][0].path == "2.0" and net[1].body[0].path == "1.body.0"
    part = net[1:3]
    assert isinstance(part, vn.Sequential) and len(part) == 2 and part[0] is net[1]
    assert net[1].body[0].path == "1.body.0"          # slicing does not rename the original's layers
    net[6] = vn.Linear(24, 5)
    assert net.output_shape((3, 4, 4)) == (5,) and net[6].path == "6"
    vn.Sequential({"features": net})                  # nesting renames: paths follow the outer network
    assert net[2][0].path == "features.2.0"
    with pytest.raises(vn.ShapeError, match="at features.2.0"):
        net[2][0].forward(np.zeros((1, 3, 4, 4)))     # Conv2d(4, 2, 1) given 3 channels
