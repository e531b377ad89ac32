"""Network-level cases: training steps and inference on zoo models, volnet vs torch.nn mirror."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as TF

import volnet as vn
import volnet.models as zoo
from benchmarks.torch_mirror import to_torch
from volnet.functional import conv_choice, weight_cache
from volnet.functional.loss import softmax_cross_entropy
from volnet.layers import hooks, inference_plan

LR = 1e-3


def _rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def volnet_train_step(net, x, labels):
    """Forward (training), softmax cross-entropy, backward, plain SGD update."""
    scores = net.forward(x, training=True)
    loss, dscores = softmax_cross_entropy(scores, labels)
    net.backward(dscores.astype(scores.dtype, copy=False), input_grad=False)   # as torch: x needs no grad
    for _, p, g in net.named_params(trainable_only=True):
        p -= LR * g
    return loss


def torch_train_step(net, xt, yt):
    """The same step in PyTorch: grads reset, forward, cross-entropy, backward, SGD update."""
    for p in net.parameters():
        p.grad = None
    loss = TF.cross_entropy(net(xt), yt)
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= LR * p.grad
    return float(loss.detach())


def vgg_cifar(seed=0):
    """The VGG-style CIFAR net of issue 21: 3x3 convs of 32, 32, 64, 64 filters with a 2x2
    pool after each pair, FC 512, FC 10 (ReLU after every conv and the first FC)."""
    rng = np.random.default_rng(seed)
    return vn.Sequential(
        vn.Conv2d(3, 32, 3, padding=1, rng=rng), vn.ReLU(),
        vn.Conv2d(32, 32, 3, padding=1, rng=rng), vn.ReLU(), vn.MaxPool2d(2),
        vn.Conv2d(32, 64, 3, padding=1, rng=rng), vn.ReLU(),
        vn.Conv2d(64, 64, 3, padding=1, rng=rng), vn.ReLU(), vn.MaxPool2d(2),
        vn.Flatten(), vn.Linear(64 * 8 * 8, 512, rng=rng), vn.ReLU(), vn.Linear(512, 10, rng=rng))


LOCAL = {"vgg_cifar": vgg_cifar}


def input_shape(text: str) -> tuple:
    """C x H x W, e.g. 3x32x32 (an argparse type: the A/B scripts' ``--shape``)."""
    import argparse
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not C x H x W of positive integers "
                                         f"(e.g. 3x32x32)")
    return tuple(int(p) for p in parts)


def build(name):
    """A zoo model (float32, seed 0), or one of this file's, and its torch.nn mirror."""
    net = LOCAL[name]() if name in LOCAL else (
        zoo.build(name) if name in zoo.MODELS else getattr(zoo, name)())
    return net, to_torch(net)


def conv_kernels_used(net, x, training) -> dict:
    """{kernel: count} of the forward pass's convolutions (one traced call; the trace's hook
    runs every layer unfused, the conv plans are the same)."""
    seen = []

    def record(layer, inp, out, _training):
        if isinstance(layer, vn.Conv2d):
            seen.append(conv_choice.plan(
                inp.shape, layer.params["weight"].shape, layer.stride, layer.padding,
                layer.dilation, layer.groups, out.shape[2:], np.result_type(inp, layer.params[
                    "weight"]), training=training).names())

    with hooks.register_forward_hook(record):
        net.forward(x, training=training)
    counts = {}
    for names in seen:
        key = names["forward"] if not training else "/".join(names.values())
        counts[key] = counts.get(key, 0) + 1
    return counts


def reuse_probe():
    """A function returning {"plans_reused", "plans_made", "transforms_reused",
    "transforms_made", "net_plans_reused", "net_plans_made"} since this call: whether
    timed calls ran on cached conv plans, filter transforms and network inference plans."""
    p0, w0, n0 = conv_choice.plan_stats(), weight_cache.stats(), inference_plan.stats()

    def since():
        p, w, n = conv_choice.plan_stats(), weight_cache.stats(), inference_plan.stats()
        return {"plans_reused": p["reused"] - p0["reused"], "plans_made": p["made"] - p0["made"],
                "transforms_reused": w["hits"] - w0["hits"],
                "transforms_made": w["misses"] - w0["misses"],
                "net_plans_reused": n["reused"] - n0["reused"],
                "net_plans_made": n["made"] - n0["made"]}
    return since


def train_case(name, batch, input_shape, rng):
    """(volnet_fn, torch_fn, volnet's error, PyTorch's error, net, x) of one checked step each.

    Both float32 steps start from identical weights; the errors are those of the loss and
    the first layer's gradient against the same step in float64 (the torch mirror in
    double precision), so each side's float32 rounding is measured against the truth,
    not against the other's rounding.
    """
    net, tnet = build(name)
    tnet.train()
    t64 = copy.deepcopy(tnet).double()
    x = rng.standard_normal((batch, *input_shape), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    loss_v = volnet_train_step(net, x, labels)
    loss_t = torch_train_step(tnet, xt, yt)
    loss_64 = torch_train_step(t64, xt.double(), yt)
    grad_64 = next(iter(t64.parameters())).grad.numpy()
    first_grad = next(g for _, _, g in net.named_params(trainable_only=True))
    t_grad = next(iter(tnet.parameters())).grad.numpy()
    err_v = max(abs(loss_v - loss_64) / abs(loss_64), _rel_err(first_grad, grad_64))
    err_t = max(abs(loss_t - loss_64) / abs(loss_64), _rel_err(t_grad, grad_64))
    return ((lambda: volnet_train_step(net, x, labels)), (lambda: torch_train_step(tnet, xt, yt)),
            err_v, err_t, net, x)


def infer_case(name, batch, input_shape, rng):
    """(volnet_fn, torch_fn, max relative error of the scores, net, x) for eval-mode inference."""
    net, tnet = build(name)
    tnet.eval()
    x = rng.standard_normal((batch, *input_shape), dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        err = _rel_err(net.forward(x), tnet(xt).numpy())

    def torch_fn():
        with torch.no_grad():
            tnet(xt)

    return (lambda: net.forward(x)), torch_fn, err, net, x
