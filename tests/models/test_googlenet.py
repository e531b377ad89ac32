"""GoogLeNet: counts, torchvision keys, eval parity, auxiliary heads trained via SideBranch."""

import numpy as np
import pytest
import torch
from batch_norm_stats import randomise_norm_stats
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import GoogLeNet, GoogLeNetAux

import volnet as vn
from volnet.models.googlenet import googlenet


def test_parameter_counts(lazy_init):
    assert googlenet().num_params() == 6_624_904                  # torchvision, no aux heads
    with_aux = googlenet(aux_logits=True)
    torch_count = sum(p.numel() for p in GoogLeNet(aux_logits=True).parameters())
    assert with_aux.num_params() == torch_count == 13_004_888
    assert with_aux.output_shape((3, 224, 224)) == (1000,)


def test_volumes_follow_the_paper(lazy_init):
    table = vn.summary(googlenet(), (3, 224, 224))
    out = {r["name"]: r["output"] for r in table.rows}
    assert out["inception3a"] == "28x28x256" and out["inception3b"] == "28x28x480"
    assert out["inception4e"] == "14x14x832" and out["inception5b"] == "7x7x1024"
    assert out["avgpool"] == "1x1x1024"


@pytest.mark.parametrize("transform_input", [False, True])
def test_eval_forward_matches_torch(transform_input, rng):
    net = googlenet(num_classes=10, seed=4, aux_logits=True, transform_input=transform_input)
    net.astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, lambda: GoogLeNet(10, True, transform_input))   # strict: same keys
    x = rng.standard_normal((2, 3, 64, 64))
    np.testing.assert_allclose(net.forward(x), torch_forward(ref, x)[0], rtol=1e-7, atol=1e-9)
    assert net.aux1.output is None                               # heads are off at inference


def test_aux_head_matches_torch(rng):
    net = googlenet(num_classes=10, seed=5, aux_logits=True).astype(np.float64)
    randomise_norm_stats(net, rng)
    ref = GoogLeNetAux(512, 10).double()
    ref.load_state_dict({k[len("aux1."):]: torch.from_numpy(v) for k, v in net.state_dict().items()
                         if k.startswith("aux1.")})
    x = rng.standard_normal((2, 512, 14, 14))
    np.testing.assert_allclose(net.aux1.head.forward(x), torch_forward(ref.eval(), x),
                               rtol=1e-7, atol=1e-9)


def test_training_step_with_aux_gradients_matches_torch(rng):
    net = googlenet(num_classes=5, seed=6, aux_logits=True).astype(np.float64)
    for _, layer in net.named_layers():
        if isinstance(layer, vn.Dropout):
            layer.drop_prob = 0.0                # deterministic: compare exact gradients
    ref = copy_into_torch(net, lambda: GoogLeNet(5, aux_logits=True)).train()
    ref.dropout.p = 0.0
    x = rng.standard_normal((2, 3, 64, 64))
    g_main, g1, g2 = (rng.standard_normal((2, 5)) for _ in range(3))

    scores = net.forward(x, training=True)
    net.aux1.grad, net.aux2.grad = g1, g2
    dx = net.backward(g_main)

    xt = torch.from_numpy(x).requires_grad_()
    main, aux1, aux2 = ref(xt)
    np.testing.assert_allclose(scores, main.detach().numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(net.aux2.output, aux2.detach().numpy(), rtol=1e-7, atol=1e-9)
    loss = (main * torch.from_numpy(g_main)).sum() + (aux1 * torch.from_numpy(g1)).sum() \
        + (aux2 * torch.from_numpy(g2)).sum()
    loss.backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(net.conv1.conv.grads["weight"], ref.conv1.conv.weight.grad.numpy(),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(net.aux1.head.fc1.grads["weight"], ref.aux1.fc1.weight.grad.numpy(),
                               rtol=1e-6, atol=1e-9)


def test_side_branch_grad_without_training_forward_is_an_error():
    net = googlenet(num_classes=3, aux_logits=True)
    x = np.zeros((2, 3, 64, 64), dtype=np.float32)
    net.forward(x, cache=True)                   # inference: the heads do not run
    net.aux1.grad = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(vn.ShapeError, match="head did not run"):
        net.backward(np.ones((2, 3), dtype=np.float32))
