"""Compiled batch norm (and batch norm with its ReLU fused) against the NumPy reference
path, PyTorch and float64 finite differences; the layer and Sequential fusion API.

Tolerances: both volnet paths and PyTorch compute the same formula with different
summation orders; float32 results agree to ~1e-6 relative, float64 to ~1e-12.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("numba")

from volnet.errors import ConfigError, StateError
from volnet.runtime import backend
from volnet.functional import norm as F
from volnet.layers import BatchNorm1d, BatchNorm2d, Conv2d, ReLU, Residual, Sequential
from volnet.tools.gradcheck import numerical_gradient
from volnet.train.sync_bn import SyncBatchNorm2d

TOL = {np.float32: 2e-5, np.float64: 1e-10}


def _rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-12))


def _volnet(kernels, x, g, b, d, training, relu, rm=None, rv=None):
    with backend.use_kernels(kernels):
        if training:
            out, mean, var, cache = F.batchnorm_forward_train(x, g, b, 1e-5, True, relu)
        else:
            out, cache = F.batchnorm_forward_eval(x, g, b, rm, rv, 1e-5, True, relu)
            mean = var = None
        dx, dg, db = F.batchnorm_backward(d, cache)
    return out, dx, dg, db, mean, var


def _torch(x, g, b, d, training, relu, rm=None, rv=None):
    xt, gt, bt = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, g, b))
    args = (None, None) if training else (torch.from_numpy(rm.astype(np.float64)),
                                          torch.from_numpy(rv.astype(np.float64)))
    out = torch.nn.functional.batch_norm(xt, *args, gt, bt, training, 0.1, 1e-5)
    if relu:
        out = torch.relu(out)
    out.backward(torch.from_numpy(d.astype(np.float64)))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


shapes = st.one_of(
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7)),
    st.tuples(st.integers(2, 6), st.integers(1, 5)),                 # BatchNorm1d (N, C)
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9)))


@given(shape=shapes, dtype=st.sampled_from([np.float32, np.float64]), training=st.booleans(),
       relu=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_compiled_batchnorm_matches_numpy_and_torch(shape, dtype, training, relu, seed):
    if training and np.prod(shape) // shape[1] < 2:
        shape = (2,) + tuple(shape[1:])
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    g, b = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    rm, rv = rng.standard_normal(shape[1]).astype(dtype), rng.uniform(0.5, 2, shape[1]).astype(dtype)
    d = rng.standard_normal(shape).astype(dtype)
    fast = _volnet("numba", x, g, b, d, training, relu, rm, rv)
    ref = _volnet("numpy", x, g, b, d, training, relu, rm, rv)
    oracle = _torch(x, g, b, d, training, relu, rm, rv)
    for got, want, expect in zip(fast[:4], ref[:4], oracle):
        assert got.dtype == dtype and got.shape == want.shape
        scale = max(np.abs(expect).max(), 1.0)
        assert np.abs(got - expect).max() / scale < TOL[dtype]
        assert np.abs(got - want).max() / scale < TOL[dtype]
    if training:   # batch statistics for the running averages
        flat = np.moveaxis(x.astype(np.float64), 1, 0).reshape(shape[1], -1)
        assert _rel(fast[4], flat.mean(axis=1)) < TOL[dtype]
        assert np.allclose(fast[5], flat.var(axis=1), rtol=TOL[dtype] * 10, atol=TOL[dtype])


@pytest.mark.parametrize("training", [True, False])
def test_fused_batchnorm_relu_gradients_by_finite_differences(training):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 3)) * 2 + 0.3
    g, b = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    d = rng.standard_normal(x.shape)

    def loss():
        with backend.use_kernels("numba"):
            if training:
                out = F.batchnorm_forward_train(x, g, b, 1e-5, False, True)[0]
            else:
                out = F.batchnorm_forward_eval(x, g, b, rm, rv, 1e-5, False, True)[0]
        return float((out * d).sum())

    _, dx, dg, db, _, _ = _volnet("numba", x, g, b, d, training, True, rm, rv)
    for array, grad in ((x, dx), (g, dg), (b, db)):
        assert _rel(grad, numerical_gradient(loss, array)) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_is_exactly_the_forward_outputs_sign(dtype):
    """Backward recomputes the pre-activation: its zeros must be the forward's zeros,
    also for values that normalise to exactly 0 (the batch mean itself)."""
    x = np.repeat(np.array([-1.0, 0.0, 1.0], dtype=dtype), 4).reshape(2, 1, 6)
    g, b = np.ones(1, dtype), np.zeros(1, dtype)
    with backend.use_kernels("numba"):
        out, _, _, cache = F.batchnorm_forward_train(x, g, b, 1e-5, True, True)
        dx_sum_zero = F.batchnorm_backward(np.ones_like(x), cache)[1:]
    assert np.array_equal(out > 0, x > 0)
    # dgamma = sum of x_hat where positive, dbeta = number of positive outputs
    assert dx_sum_zero[1][0] == (x > 0).sum()


@pytest.mark.parametrize("batch_stats", [True, False])
def test_threaded_backward_with_relu_matches_torch_and_the_serial_kernel(batch_stats):
    """The fused ReLU's mask is recomputed in both passes of the backward kernel: the
    threaded variant (arrays of launch.PARALLEL_MIN elements and more) gives the serial
    one's bits, and both match float64 PyTorch, NaN inputs included (their outputs are NaN,
    their gradient through the ReLU zero, as the mask x > 0 says)."""
    kernels = pytest.importorskip("volnet.functional.compiled.norm")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 50)).astype(np.float32)
    x[1, 2, 7] = np.nan
    d = rng.standard_normal(x.shape).astype(np.float32)
    g = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    b = (rng.standard_normal(6) * 0.3).astype(np.float32)
    mean = np.nanmean(x.astype(np.float64), axis=(0, 2))
    inv = 1 / np.sqrt(np.nanvar(x.astype(np.float64), axis=(0, 2)) + 1e-5)
    mean_t, scale_t = mean.astype(np.float32), (g * inv).astype(np.float32)
    got = []
    for variant in (kernels.backward.serial, kernels.backward.parallel):
        dx, dg, db = np.empty_like(x), np.empty(6), np.empty(6)
        variant(x, d, mean_t, scale_t, b, mean, inv, g, True, batch_stats, dx, dg, db)
        got.append((dx, dg, db))
    for one, two in zip(*got):
        assert np.array_equal(one, two, equal_nan=True)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = (xt - torch.tensor(mean)[:, None]) * torch.tensor(inv * g)[:, None] + torch.tensor(
        b, dtype=torch.float64)[:, None]
    if batch_stats:   # through the batch statistics (channel 2's are over its finite values)
        keep = torch.isfinite(xt)
        mu = (torch.where(keep, xt, 0).sum((0, 2)) / keep.sum((0, 2)))[:, None]
        var = (torch.where(keep, xt - mu, 0) ** 2).sum((0, 2)) / keep.sum((0, 2))
        y = (xt - mu) / torch.sqrt(var + 1e-5)[:, None] * torch.tensor(
            g, dtype=torch.float64)[:, None] + torch.tensor(b, dtype=torch.float64)[:, None]
    out = torch.relu(torch.where(torch.isnan(y), -1.0, y))
    out.backward(torch.tensor(d, dtype=torch.float64))
    dx, dg, db = got[0]
    finite = np.isfinite(x).all(axis=(0, 2))
    want_dx = xt.grad.numpy()
    assert _rel(dx[:, finite], want_dx[:, finite]) < TOL[np.float32]
    assert _rel(db, ((y.detach().numpy() > 0) * d).sum((0, 2))) < TOL[np.float32]
    assert np.isfinite(dg[finite]).all()


def _net(kind, dtype=np.float64):
    rng = np.random.default_rng(0)
    if kind == "seq":
        net = Sequential(Conv2d(2, 3, 3, padding=1, rng=rng), BatchNorm2d(3), ReLU(),
                         Conv2d(3, 3, 1, rng=rng), BatchNorm2d(3), ReLU())
    elif kind == "first":
        net = Sequential(BatchNorm1d(4), ReLU(), BatchNorm1d(4))
    else:
        body = Sequential(Conv2d(3, 3, 3, padding=1, rng=rng), BatchNorm2d(3), ReLU(),
                          Conv2d(3, 3, 3, padding=1, rng=rng), BatchNorm2d(3))
        net = Sequential(Conv2d(2, 3, 1, rng=rng), Residual(body, None, ReLU()))
    for layer in (lay for _, lay in net.named_layers() if isinstance(lay, BatchNorm2d | BatchNorm1d)):
        layer.params["weight"][...] = rng.uniform(0.5, 1.5, layer.num_features)
        layer.params["bias"][...] = rng.standard_normal(layer.num_features) * 0.3
    return net.astype(dtype)


@pytest.mark.parametrize("kind", ["seq", "first", "residual"])
@pytest.mark.parametrize("training", [True, False])
def test_sequential_fusion_keeps_outputs_and_gradients(kind, training):
    rng = np.random.default_rng(1)
    shape = (4, 4) if kind == "first" else (3, 2, 5, 4)
    x = rng.standard_normal(shape)
    results = []
    for kernels in ("numpy", "numba"):
        net = _net(kind)
        with backend.use_kernels(kernels):
            out = net.forward(x, training=training, cache=True)
            dx = net.backward(np.cos(out))
            net.forward(x, training=training, cache=True)  # a cache serves one backward
            net.backward(np.cos(out), input_grad=False)   # the path a training step takes
        grads = {n: g.copy() for n, _, g in net.named_params()}
        results.append((out, dx, grads, net.state_dict()))
    (o1, d1, g1, s1), (o2, d2, g2, s2) = results
    assert _rel(o2, o1) < 1e-12 and _rel(d2, d1) < 1e-10
    # (a conv bias before batch norm has a zero gradient: absolute tolerance for it)
    assert all(np.allclose(g2[n], g1[n], rtol=1e-9, atol=1e-12) for n in g1)
    assert all(np.allclose(s2[k], s1[k], rtol=1e-12, atol=0) for k in s1)   # running stats


def test_fusion_happens_only_with_compiled_kernels_and_relu_layer_stays():
    net = _net("seq")
    x = np.random.default_rng(2).standard_normal((2, 2, 4, 4))
    with backend.use_kernels("numba"):
        net.forward(x, training=True)
    assert net[2]._cache is None and net[1]._cache is not None   # ReLU skipped, BN did it
    assert [k for k in net.state_dict()] == [k for k in _net("seq").state_dict()]
    with backend.use_kernels("numpy"):
        net.forward(x, training=True)
    assert net[2]._cache is not None                               # reference: no fusion


def test_backward_must_match_the_kind_of_forward():
    bn = BatchNorm2d(2).astype(np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    for kernels in ("numpy", "numba"):
        with backend.use_kernels(kernels):
            out = bn.forward_relu(x, training=True)
            assert np.array_equal(out, np.maximum(bn.forward(x, training=True), 0))
            bn.forward_relu(x, training=True)
            with pytest.raises(StateError, match="backward_relu"):
                bn.backward(np.ones_like(x))
            bn.forward(x, training=True)
            with pytest.raises(StateError, match="call backward"):
                bn.backward_relu(np.ones_like(x))


def test_sync_batchnorm_is_never_fused():
    bn = SyncBatchNorm2d(2)
    assert not bn.fuses_relu
    with pytest.raises(ConfigError, match="cannot fuse"):
        bn.forward_relu(np.ones((2, 2, 2, 2), np.float32), training=True)
