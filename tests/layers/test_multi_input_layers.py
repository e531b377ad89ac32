"""BinaryOp and MatMul, the layers over two computed tensors (squeeze-and-excitation gates,
SiLU's product, ResNeSt's weighted sum, attention scores): central differences in float64 for both inputs, PyTorch
parity (forward and both input gradients) in float64 and float32, inside a Graph, and the
errors for inputs that cannot be combined."""

import numpy as np
import pytest
import torch
from layer_cases import JOIN_CASES, JOIN_IDS, TORCH_BINARY, numeric_gradient, rel_error

import volnet as vn
from volnet import layers as L


@pytest.mark.parametrize("case", JOIN_CASES, ids=JOIN_IDS)
def test_backward_matches_central_differences(case):
    layer = case.layer()
    xs = [x.copy() for x in case.xs()]
    out = layer.forward(tuple(xs), cache=True)
    up = np.random.default_rng(2).standard_normal(out.shape)
    grads = layer.backward(up)
    assert len(grads) == 2
    for x, g in zip(xs, grads):
        assert g.shape == x.shape
        num = numeric_gradient(lambda: float(np.sum(layer.forward(tuple(xs)) * up)), x)
        assert rel_error(g, num) < 1e-8, case.id


@pytest.mark.parametrize("dtype, tdtype, tol", [(np.float64, torch.float64, 1e-12),
                                                (np.float32, torch.float32, 1e-5)])
@pytest.mark.parametrize("case", JOIN_CASES, ids=JOIN_IDS)
def test_matches_torch(case, dtype, tdtype, tol):
    layer = case.layer()
    xs = case.xs(n=3, dtype=dtype)
    out = layer.forward(xs, cache=True)
    up = np.random.default_rng(4).standard_normal(out.shape).astype(dtype)
    grads = layer.backward(up)
    ts = [torch.tensor(x, dtype=tdtype, requires_grad=True) for x in xs]
    ref = TORCH_BINARY[case.op](*ts)
    ref.backward(torch.tensor(up))
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=tol, atol=tol)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=tol, atol=tol)


def test_ties_share_the_gradient_as_torch_does():
    a = np.array([[1.0, 2.0, 3.0]])
    b = np.array([[1.0, 1.0, 4.0]])
    layer = L.BinaryOp("max")
    layer.forward((a, b), cache=True)
    da, db = layer.backward(np.ones((1, 3)))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    torch.maximum(ta, tb).sum().backward()
    np.testing.assert_array_equal(da, ta.grad.numpy())
    np.testing.assert_array_equal(db, tb.grad.numpy())


def _se_graph():
    """x -> conv -> (global pool -> conv -> sigmoid) gate * features: a squeeze-excitation block."""
    layers = {"conv": vn.Conv2d(3, 4, 3, padding=1, rng=0), "pool": vn.GlobalAvgPool2d(),
              "fc": vn.Conv2d(4, 4, 1, rng=1), "gate": vn.Sigmoid(), "scale": L.BinaryOp("mul")}
    nodes = [L.Node("layer", "conv", ("x",), "f"), L.Node("layer", "pool", ("f",), "p"),
             L.Node("layer", "fc", ("p",), "q"), L.Node("layer", "gate", ("q",), "g"),
             L.Node("layer", "scale", ("g", "f"), "y")]
    return L.Graph(layers, nodes, "x", "y")


def test_graph_with_a_gate_matches_central_differences():
    net = _se_graph().astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    out = net.forward(x, cache=True)
    assert out.shape == (2, 4, 4, 4) and net.output_shape((3, 4, 4)) == (4, 4, 4)
    up = np.random.default_rng(1).standard_normal(out.shape)
    dx = net.backward(up)
    loss = lambda: float(np.sum(net.forward(x) * up))
    assert rel_error(dx, numeric_gradient(loss, x)) < 1e-7
    analytic = {name: g.copy() for name, _, g in net.named_params()}
    for name, p, _ in net.named_params():
        assert rel_error(analytic[name], numeric_gradient(loss, p)) < 1e-7, name


@pytest.mark.parametrize("xs, match", [
    (np.ones((2, 3)), "takes a tuple of 2 arrays, got ndarray"),
    ((np.ones((2, 3)),), "takes a tuple of 2 arrays, got tuple of 1"),
    ((np.ones((2, 3)), np.ones((2, 3, 1))), "differ in rank; the batch axis would meet another"),
    ((np.ones((2, 3)), np.ones((2, 4))), r"per-example shapes \(3,\) and \(4,\) do not broadcast"),
    ((np.ones((2, 3)), np.ones((3, 3))), "do not share one batch axis"),
])
def test_bad_inputs_are_named(xs, match):
    with pytest.raises(vn.ShapeError, match=match):
        L.BinaryOp("mul").forward(xs)


def test_unknown_op_is_refused():
    with pytest.raises(vn.ConfigError, match=r"op must be one of \['add', 'div', 'max'"):
        L.BinaryOp("pow")


def test_matmul_refuses_mismatched_matrices():
    with pytest.raises(vn.ShapeError, match=r"\(N, 3, 4\) @ \(N, 3, 4\) is not a product"):
        L.MatMul().forward((np.ones((2, 3, 4)), np.ones((2, 3, 4))))


def test_anomaly_mode_names_a_multi_input_layer():
    layer = L.BinaryOp("div")
    with np.errstate(divide="ignore", over="ignore"), vn.detect_anomaly(), pytest.raises(vn.NonFiniteError, match=r"forward pass of "
                                            r"BinaryOp\('div'\) produced 0 NaN and 1 inf|"
                                            r"forward pass of BinaryOp\('div'\) produced 1 inf"):
        layer.forward((np.ones((1, 2)), np.array([[1.0, 0.0]])))
    layer.forward((np.ones((1, 2)), np.array([[1.0, 1e-300]])), cache=True)
    with np.errstate(over="ignore"), vn.detect_anomaly(), pytest.raises(vn.NonFiniteError, match=r"backward pass of "
                                            r"BinaryOp\('div'\) produced .* its input gradient"):
        layer.backward(np.ones((1, 2)))
