"""The zoo networks' planned inference (volnet/layers/inference_plan.py) against PyTorch in
float32: the second call with a shape runs the plan (fused conv + batch norm + residual sum
+ ReLU steps), which the parity tests' single calls never reach."""

import numpy as np
import pytest
from batch_norm_stats import randomise_norm_stats
from zoo_helpers import copy_into_torch, torch_forward
from zoo_torch_refs import VGG, BasicBlock, Bottleneck, GoogLeNet, ResNet

from volnet.layers import inference_plan
from volnet.models import googlenet, resnet, vgg
from volnet.models.vgg import VGG_CONFIGS

WIDTHS = (8, 16, 16, 32)
CASES = {
    "resnet18": (lambda: resnet(18, num_classes=10, widths=WIDTHS, seed=2),
                 lambda: ResNet(BasicBlock, [2, 2, 2, 2], 10, WIDTHS), 64),
    "resnet50": (lambda: resnet(50, num_classes=10, widths=WIDTHS, seed=2),
                 lambda: ResNet(Bottleneck, [3, 4, 6, 3], 10, WIDTHS), 64),
    "googlenet": (lambda: googlenet(num_classes=10, seed=4),
                  lambda: GoogLeNet(10, False, False), 64),
    "vgg11_bn": (lambda: vgg("vgg11", batch_norm=True, num_classes=10, hidden_features=32, seed=3),
                 lambda: VGG(VGG_CONFIGS["vgg11"], True, 10, hidden=32), 32),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_planned_float32_inference_matches_torch(name, rng):
    make, make_torch, size = CASES[name]
    net = make()
    randomise_norm_stats(net, rng)
    ref = copy_into_torch(net, make_torch)          # float32, sharing volnet's parameters
    x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    want = torch_forward(ref, x)
    want = want[0] if isinstance(want, tuple) else want
    reused = inference_plan.stats()["reused"]
    first, planned = net.forward(x), net.forward(x)
    assert inference_plan.stats()["reused"] == reused + 1
    scale = np.abs(want).max()
    for out in (first, planned):
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5 * scale)


def test_planned_inference_by_the_outer_kernel_matches_the_reference_path(rng, monkeypatch):
    """A small ResNet-18 at batch 1 on 48x48 inputs, eval mode, with the outer kernel on
    (conv_choice.OUTER): its 3x3 convolutions, strided or on maps too small for Winograd,
    run the outer-product kernel (compiled/outer.py), fused with their batch norms,
    shortcuts and ReLUs; first call and planned call against the NumPy reference path
    (VOLNET_KERNELS=numpy: separate layers, im2col)."""
    from volnet.functional import conv_choice
    from volnet.functional.compiled import outer
    from volnet.runtime import backend

    monkeypatch.setattr(conv_choice, "OUTER", True)
    net = CASES["resnet18"][0]()
    randomise_norm_stats(net, rng)
    x = rng.standard_normal((1, 3, 48, 48)).astype(np.float32)
    with backend.use_kernels("numpy"):
        want = net.forward(x)
    calls, real = [], outer.forward

    def counted(x, w, b, stride, padding, dilation, groups, out_size, *rest):
        calls.append((x.shape, w.shape, tuple(stride), tuple(padding), tuple(dilation),
                      int(groups), tuple(out_size)))
        return real(x, w, b, stride, padding, dilation, groups, out_size, *rest)

    monkeypatch.setattr(outer, "forward", counted)
    with backend.use_kernels("numba"):
        first = net.forward(x)
        once = len(calls)
        planned = net.forward(x)
        for call in set(calls):      # the plan chose it: nothing else ran under that name
            assert conv_choice.plan(*call, np.float32).forward == "outer", call
    assert once >= 10 and len(calls) == 2 * once        # most of the 20 convolutions, twice
    scale = np.abs(want).max()
    for out in (first, planned):
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5 * scale)
