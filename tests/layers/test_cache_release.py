"""Backward releases each layer's cache once used, as PyTorch frees saved tensors.

What a training step holds at its peak: the forward's activations, not those plus every
gradient computed so far. Checked by what the layers hold (no timing, no tracemalloc):
after ``backward`` no layer keeps a cache, a second backward asks for a forward, and the
next step's gradients are still exact (reference: PyTorch in float64).
"""

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.errors import StateError
from volnet.runtime import backend


def _net():
    rng = np.random.default_rng(0)
    block = vn.Sequential(vn.Conv2d(4, 4, 3, padding=1, rng=rng), vn.BatchNorm2d(4), vn.ReLU(),
                          vn.Conv2d(4, 4, 3, padding=1, rng=rng), vn.BatchNorm2d(4))
    return vn.Sequential(vn.Conv2d(2, 4, 3, padding=1, rng=rng), vn.BatchNorm2d(4), vn.ReLU(),
                         vn.Residual(block, activation=vn.ReLU()), vn.MaxPool2d(2), vn.Flatten(),
                         vn.Linear(4 * 4 * 4, 3, rng=rng)).astype(np.float64)


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
def test_backward_releases_every_cache_and_gradients_stay_exact(kernels):
    if kernels == "numba" and not backend.numba_available():
        pytest.skip("numba missing")
    from benchmarks.torch_mirror import to_torch

    net = _net()
    tnet = to_torch(net).double().train()
    rng = np.random.default_rng(1)
    with backend.use_kernels(kernels):
        for step in range(2):                 # the second step reuses released buffers
            x = rng.standard_normal((2, 2, 8, 8))
            d = rng.standard_normal((2, 3))
            net.forward(x, training=True)
            assert any(layer._cache is not None for _, layer in net.named_layers())
            dx = net.backward(d)
            assert [p for p, layer in net.named_layers() if layer._cache is not None] == []
            xt = torch.tensor(x, requires_grad=True)
            tnet.zero_grad()
            tnet(xt).backward(torch.tensor(d))
            np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
            for (name, _, grad), tp in zip(net.named_params(), tnet.parameters()):
                np.testing.assert_allclose(grad, tp.grad.numpy(), rtol=1e-8, atol=1e-12,
                                           err_msg=name)
        with pytest.raises(StateError, match="each forward's cache serves one backward"):
            net.backward(d)


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
def test_retain_cache_keeps_every_cache_for_a_second_identical_backward(kernels):
    """PyTorch's retain_graph=True: two backwards of one forward give the same gradients
    (float64 against PyTorch; a float32 net on the compiled direct and Winograd paths
    against itself), and the one without retain_cache releases as before."""
    if kernels == "numba" and not backend.numba_available():
        pytest.skip("numba missing")
    from benchmarks.torch_mirror import to_torch

    rng = np.random.default_rng(2)
    wide = vn.Sequential(vn.Conv2d(8, 64, 3, padding=1, rng=rng), vn.BatchNorm2d(64), vn.ReLU(),
                         vn.Conv2d(64, 64, 3, padding=1, rng=rng), vn.ReLU(), vn.MaxPool2d(2),
                         vn.Flatten(), vn.Linear(64 * 16 * 16, 5, rng=rng))
    cases = [(_net(), rng.standard_normal((2, 2, 8, 8)), rng.standard_normal((2, 3))),
             (wide, rng.standard_normal((4, 8, 32, 32)).astype(np.float32),
              rng.standard_normal((4, 5)).astype(np.float32))]
    with backend.use_kernels(kernels):
        for net, x, d in cases:
            net.forward(x, training=True)
            dx1 = net.backward(d, retain_cache=True)
            grads1 = {name: g.copy() for name, _, g in net.named_params()}
            assert all(layer._cache is not None for _, layer in net.named_layers()
                       if layer.params)
            dx2 = net.backward(d)
            np.testing.assert_array_equal(dx2, dx1)
            for name, _, g in net.named_params():
                np.testing.assert_array_equal(g, grads1[name], err_msg=name)
            assert [p for p, layer in net.named_layers() if layer._cache is not None] == []
            if x.dtype == np.float64:
                tnet = to_torch(net).double().train()
                xt = torch.tensor(x, requires_grad=True)
                tnet(xt).backward(torch.tensor(d))
                np.testing.assert_allclose(dx1, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
            with pytest.raises(StateError, match="retain_cache=True"):
                net.backward(d)
