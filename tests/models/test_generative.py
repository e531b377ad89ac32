"""The DCGAN pair and the conv VAE: pinned volumes and parameter counts (hand counts from the
layer widths), the DCGAN guidelines, PyTorch parity, and the Reparameterize layer's gradients
(sampling and KL term) against central differences."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

import volnet as vn
from volnet.layers.reparameterize import Reparameterize


def _convt(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def test_generator_volumes_and_parameters():
    net = vn.models.dcgan_generator()
    rows = [r for r in vn.summary(net, (100, 1, 1)).rows if r["type"] == "ConvTranspose2d"]
    assert [r["output"] for r in rows] == ["7x7x64", "14x14x32", "28x28x1"]
    # two bias-free transposed convs + BN (2 per channel), then the output layer with bias
    assert net.num_params() == _convt(100, 64, 7, False) + 128 + _convt(64, 32, 4, False) + 64 \
        + _convt(32, 1, 4) == 347_073


def test_discriminator_and_vae_parameters():
    d = vn.models.dcgan_discriminator()
    assert d.output_shape((1, 28, 28)) == (1,)
    assert d.num_params() == (16 * 32 + 32) + 32 * 64 * 16 + 128 + (64 * 49 + 1) == 36_577
    vae = vn.models.conv_vae()
    enc = (16 * 32 + 32) + (32 * 64 * 16 + 64) + (64 * 49 * 32 + 32)
    dec = _convt(16, 64, 7) + _convt(64, 32, 4) + _convt(32, 1, 4)
    assert vae.num_params() == enc + dec == 217_313
    assert vae.output_shape((1, 28, 28)) == (1, 28, 28)
    assert vae.encoder.output_shape((1, 28, 28)) == (32, 1, 1)


def test_dcgan_guidelines_no_pooling_no_hidden_fc():
    for net in (vn.models.dcgan_generator(), vn.models.dcgan_discriminator()):
        kinds = {type(layer).__name__ for _, layer in net.named_layers()}
        assert not kinds & {"MaxPool2d", "AvgPool2d", "Linear", "GlobalAvgPool2d"}, kinds
    assert isinstance(vn.models.dcgan_generator()[-1], vn.Tanh)
    assert sum(isinstance(m, vn.LeakyReLU) for m in vn.models.dcgan_discriminator()) == 2


def test_generator_and_discriminator_match_torch():
    t = torch.nn
    g = vn.models.dcgan_generator(seed=1)
    ref_g = t.Sequential(OrderedDict([
        ("0", t.ConvTranspose2d(100, 64, 7, bias=False)), ("1", t.BatchNorm2d(64)), ("2", t.ReLU()),
        ("3", t.ConvTranspose2d(64, 32, 4, 2, 1, bias=False)), ("4", t.BatchNorm2d(32)), ("5", t.ReLU()),
        ("6", t.ConvTranspose2d(32, 1, 4, 2, 1)), ("7", t.Tanh())]))
    d = vn.models.dcgan_discriminator(seed=2)
    ref_d = t.Sequential(OrderedDict([
        ("0", t.Conv2d(1, 32, 4, 2, 1)), ("1", t.LeakyReLU(0.2)), ("2", t.Conv2d(32, 64, 4, 2, 1, bias=False)),
        ("3", t.BatchNorm2d(64)), ("4", t.LeakyReLU(0.2)), ("5", t.Conv2d(64, 1, 7)), ("6", t.Flatten())]))
    z = np.random.default_rng(0).standard_normal((3, 100, 1, 1)).astype(np.float32)
    for net, ref, x in ((g, ref_g, z), (d, ref_d, None)):
        ref.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
        x = x if x is not None else g.forward(z)
        out = net.forward(x, training=True)
        xt = torch.tensor(x, requires_grad=True)
        out_t = ref.train()(xt)
        np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-4, atol=1e-5)
        dout = np.ones_like(out)
        np.testing.assert_allclose(net.backward(dout), torch.autograd.grad(out_t.sum(), xt)[0].numpy(),
                                   rtol=1e-4, atol=1e-5)


def _numeric(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        plus = f()
        a.flat[i] = old - eps
        minus = f()
        a.flat[i] = old
        g.flat[i] = (plus - minus) / (2 * eps)
    return g


@pytest.mark.parametrize("kl_weight", [0.0, 0.7])
def test_reparameterize_gradient_with_kl(kl_weight):
    layer = Reparameterize(3, kl_weight=kl_weight)
    x = np.random.default_rng(1).standard_normal((2, 6, 1, 1))
    up = np.random.default_rng(2).standard_normal((2, 3, 1, 1))

    def loss():
        layer.rng = np.random.default_rng(5)            # the same eps every time
        return float(np.sum(layer.forward(x, training=True) * up) + kl_weight * layer.kl.sum())

    loss()
    analytic = layer.backward(up)
    np.testing.assert_allclose(analytic, _numeric(loss, x), rtol=1e-6, atol=1e-8)


def test_reparameterize_kl_and_eval_mean():
    mu, logvar = np.array([[1.0, -2.0]]), np.array([[0.0, np.log(4.0)]])
    layer = Reparameterize(2)
    x = np.concatenate([mu, logvar], axis=1)
    np.testing.assert_array_equal(layer.forward(x), mu)        # inference: z = mu
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - ln s^2 - 1): 0.5 * (1 + 0) + 0.5 * (4 + 4 - ln 4 - 1)
    np.testing.assert_allclose(layer.kl, [0.5 + 0.5 * (7 - np.log(4.0))])
    with pytest.raises(vn.ShapeError, match="expects 2 \\* 2 = 4 channels"):
        layer.forward(np.zeros((1, 3)))
