"""The one hook point: per-layer and global hooks see every layer's forward and backward."""

import numpy as np

import volnet as vn
from volnet.layers import hooks


def _net():
    return vn.Sequential(vn.Conv2d(2, 3, 3, padding=1), vn.ReLU(), vn.Flatten(), vn.Linear(48, 4))


def test_backward_hooks_fire_in_reverse_order_with_grads_written():
    net = _net()
    order = []

    def ready(layer, dout, dx):
        # the layer's gradients are written when its hook runs
        for name in layer.params:
            assert layer.grads[name].shape == layer.params[name].shape
        order.append(layer.path)

    handles = [layer.register_backward_hook(ready) for _, layer in net.named_layers()]
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    net.forward(x, training=True)
    net.backward(np.ones((2, 4), np.float32), input_grad=False)
    assert order == ["3", "2", "1", "0", ""]   # children in reverse, the container last
    for h in handles:
        h.remove()
    order.clear()
    net.forward(x, training=True)
    net.backward(np.ones((2, 4), np.float32))
    assert order == []


def test_global_forward_hook_sees_every_layer_and_is_removed():
    net = _net()
    seen = []
    with hooks.register_forward_hook(lambda layer, x, out, training: seen.append((layer.path, out.shape))):
        net.forward(np.zeros((1, 2, 4, 4), np.float32))
    assert seen == [("0", (1, 3, 4, 4)), ("1", (1, 3, 4, 4)), ("2", (1, 48)), ("3", (1, 4)), ("", (1, 4))]
    seen.clear()
    net.forward(np.zeros((1, 2, 4, 4), np.float32))
    assert seen == []


def test_copy_drops_hooks():
    net = _net()
    calls = []
    net[0].register_forward_hook(lambda *a: calls.append(1))
    net.copy().forward(np.zeros((1, 2, 4, 4), np.float32))
    assert calls == []


def test_backward_accumulate_adds_to_existing_grads():
    """accumulate=True: two micro-batches' gradients sum to the full batch's (hand reference)."""
    rng = np.random.default_rng(1)
    net = vn.Sequential(vn.Conv2d(2, 3, 3, padding=1), vn.BatchNorm2d(3), vn.ReLU(), vn.Flatten(),
                        vn.Linear(48, 4)).astype(np.float64)
    a, b = rng.standard_normal((2, 3, 2, 4, 4))
    da, db = rng.standard_normal((2, 3, 4))
    grads = []
    for x, d in ((a, da), (b, db)):
        net.forward(x, training=True)
        net.backward(d, input_grad=False)
        grads.append({n: g.copy() for n, _, g in net.named_params()})
    net.forward(a, training=True)
    net.backward(da)
    net.forward(b, training=True)
    net.backward(db, accumulate=True)
    for name, _, g in net.named_params():
        np.testing.assert_allclose(g, grads[0][name] + grads[1][name], rtol=1e-12, atol=1e-12)
    net.forward(b, training=True)
    net.backward(db)   # the default overwrites again
    for name, _, g in net.named_params():
        np.testing.assert_allclose(g, grads[1][name], rtol=1e-12, atol=1e-12)
