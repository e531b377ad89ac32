"""Every LAYER_CASES network agrees with the same network built from torch.nn (same weights).

Forward output, input gradient and every parameter gradient (matched by dotted name, so
the state-dict keys are PyTorch's too): tight in float64, within float32 tolerance in
float32. Training-mode cases also compare BN running statistics after the step.
"""

import numpy as np
import pytest
import torch
from layer_cases import CASE_IDS, LAYER_CASES, to_torch

import volnet as vn


def _run_both(case, dtype, tdtype):
    layer = case.layer(dtype)
    ref = to_torch(layer, tdtype, case.training)       # before the step changes running stats
    ref.train(case.training)
    x = case.x(n=3, dtype=dtype)
    out = layer.forward(x, case.training, cache=True)
    xt = torch.tensor(x, requires_grad=True)
    out_t = ref(xt)
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dout)
    out_t.backward(torch.tensor(dout))
    return layer, ref, (out, out_t), (dx, xt.grad)


def _compare(layer, ref, outs, dxs, rtol, atol):
    assert outs[0].shape == tuple(outs[1].shape)
    np.testing.assert_allclose(outs[0], outs[1].detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(dxs[0], dxs[1].numpy(), rtol=rtol, atol=atol)
    torch_grads = {name: p.grad.numpy() for name, p in ref.named_parameters()}
    ours = {name: g for name, _, g in layer.named_params()}
    assert set(ours) == set(torch_grads)
    for name, grad in ours.items():
        np.testing.assert_allclose(grad, torch_grads[name], rtol=rtol, atol=atol, err_msg=name)
    torch_state = ref.state_dict()
    for key, value in layer.state_dict().items():      # running statistics after the step
        np.testing.assert_allclose(value, torch_state[key].numpy(), rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_float64_matches_torch(case):
    _compare(*_run_both(case, np.float64, torch.float64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", LAYER_CASES, ids=CASE_IDS)
def test_float32_matches_torch(case):
    layer, ref, outs, dxs = _run_both(case, np.float32, torch.float32)
    assert outs[0].dtype == np.float32 and dxs[0].dtype == np.float32
    _compare(layer, ref, outs, dxs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls, shape", [(vn.BatchNorm2d, (4, 3, 5, 2)), (vn.BatchNorm1d, (6, 3)),
                                        (vn.BatchNorm1d, (4, 3, 5))])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_batchnorm_running_stats_match_torch_after_several_steps(cls, shape, momentum):
    """PyTorch's convention: running = (1 - m) running + m batch, with the unbiased batch variance."""
    layer = cls(3, momentum=momentum).astype(np.float64)
    ref = (torch.nn.BatchNorm2d if cls is vn.BatchNorm2d else torch.nn.BatchNorm1d)(3, momentum=momentum)
    ref.double().train()
    rng = np.random.default_rng(6)
    for step in range(4):
        x = rng.normal(step, 1 + step, shape)
        np.testing.assert_allclose(layer.forward(x, training=True), ref(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-10, atol=1e-10)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(layer.buffers[key], getattr(ref, key).numpy(), rtol=1e-12)
    x = rng.standard_normal(shape)
    ref.eval()
    np.testing.assert_allclose(layer.forward(x), ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(1, 2048, 7, 7), (1, 5, 1, 1), (2, 3, 13, 11), (1, 4, 1, 9)])
def test_global_avg_pool_matches_torch_at_batch_one_with_nan_and_inf(shape, dtype, rtol):
    # the plane sums as a product with ones (GEMV): the means; and inside a network (the
    # plan's step, which the input checks do not guard) NaN / +-inf as torch gives them
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy()
    out = vn.GlobalAvgPool2d().forward(x)
    assert out.shape == want.shape and out.dtype == dtype
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol)
    x[0, 0, 0, 0] = np.nan
    if shape[1] > 2:
        x[0, 1, 0, 0] = np.inf
        x[0, 2, 0, 0], x[0, 2, -1, -1] = np.inf, -np.inf
    want = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy()
    with np.errstate(invalid="ignore"):     # inf - inf warns, as NumPy's mean did
        out = vn.GlobalAvgPool2d().forward_planned(x)
    assert np.isnan(out[0, 0]).all()
    np.testing.assert_allclose(out, want, rtol=rtol, atol=rtol)
