"""A fused ReLU keeps NaN, as the unfused one, ``np.maximum(x, 0)`` and PyTorch's relu do: NaN,
+inf and -inf put into a convolution's input, bias, scale or residual, or into a batch norm's
input, give NaN (and +inf, 0) at the same outputs on every compiled kernel that fuses the ReLU
into its epilogue as on the NumPy reference path (VOLNET_KERNELS=numpy), whose class PyTorch
float64 confirms. Each case steers the kernel choice (conv_choice's switches) and asserts the
plan's forward kernel, so it cannot silently test another path.
"""

import numpy as np
import pytest
import torch

from volnet.functional import conv_choice, conv_gemm
from volnet.functional.conv import conv2d_forward, conv_output_size
from volnet.functional.norm import batchnorm_forward_eval, batchnorm_forward_train
from volnet.layers import inference_plan
from volnet.models import resnet
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

TOL = 1e-4

# name -> (kernel, (n, c, h, w, f, k, stride, padding, dilation, groups)) that the steered
# choice gives that kernel; Winograd dilated runs its other output transform (_output_subgrid)
CONV_CASES = {
    "outer": ("outer", (2, 10, 9, 9, 20, 3, 2, 1, 1, 1)),
    "direct": ("direct", (2, 10, 9, 9, 20, 3, 2, 1, 1, 1)),
    "im2col": ("im2col", (2, 10, 9, 9, 20, 3, 2, 1, 1, 1)),
    "winograd4": ("winograd4", (2, 16, 32, 32, 16, 3, 1, 1, 1, 1)),
    "winograd4 dilated": ("winograd4", (2, 16, 34, 34, 16, 3, 1, 2, 2, 1)),
    "depthwise": ("depthwise", (2, 12, 9, 9, 12, 3, 1, 1, 1, 12)),
    "gemm1x1": ("gemm1x1", (3, 16, 6, 6, 24, 1, 1, 0, 1, 1)),
    "pointwise": ("pointwise", (1, 16, 9, 9, 24, 1, 1, 0, 1, 1)),
}


def _steer(monkeypatch, kernel):
    """Only ``kernel``'s switch on (im2col: all off), im2col's split by filters off."""
    monkeypatch.setattr(conv_choice, "OUTER", kernel == "outer")
    monkeypatch.setattr(conv_choice, "POINTWISE", kernel == "pointwise")
    if kernel == "pointwise":    # chosen only with AVX-512 (conv_choice.pointwise_fits)
        from volnet.functional.compiled import intrinsics
        monkeypatch.setattr(intrinsics, "wide_vectors", lambda: True)
    monkeypatch.setattr(conv_choice, "POINTWISE_MIN_POSITIONS", 0)   # any batch
    monkeypatch.setattr(conv_choice, "DIRECT", kernel == "direct")
    monkeypatch.setattr(conv_choice, "WINOGRAD", kernel == "winograd4")
    monkeypatch.setattr(conv_choice, "IM2COL_SPLIT_MAX_POSITIONS", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)   # small cases' Winograd


def _operands(case, seed=0):
    n, c, h, w, f, k, s, p, d, g = case
    rng = np.random.default_rng(seed)
    ho, wo = (conv_output_size(v, k, s, p, d) for v in (h, w))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((f, c // g, k, k)) / np.sqrt(c // g * k * k)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, f).astype(np.float32)
    residual = rng.standard_normal((n, f, ho, wo)).astype(np.float32)
    return x, wt, b, scale, residual


def _poison(arrays, where, rng):
    """NaN, +inf and -inf at a few places of ``arrays[where]`` (a copy)."""
    out = dict(arrays)
    a = out[where].copy()
    flat = a.reshape(-1)
    picks = rng.choice(flat.size, size=min(6, flat.size), replace=False)
    flat[picks] = np.array([np.nan, np.inf, -np.inf, np.nan, np.inf, -np.inf],
                           np.float32)[:picks.size]
    out[where] = a
    return out


def _torch_conv(ops, case, relu):
    *_, s, p, d, g = case
    t = {k: None if v is None else torch.tensor(v, dtype=torch.float64) for k, v in ops.items()}
    out = torch.nn.functional.conv2d(t["x"], t["w"], None, s, p, d, g)
    if t["scale"] is not None:
        out = out * t["scale"][:, None, None]
    out = out + t["b"][:, None, None]
    if t["residual"] is not None:
        out = out + t["residual"]
    return (torch.relu(out) if relu else out).numpy()


def _classes(a):
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def _assert_same_class(got, want, subset=False):
    """NaN, +inf and -inf at the same outputs (``subset``: got's NaN may cover more, as a
    Winograd tile spreads an infinite input over the whole tile), finite ones close."""
    for g, w, name in zip(_classes(got), _classes(want), ("NaN", "+inf", "-inf")):
        if subset and name == "NaN":
            assert (g | ~w).all(), "NaN at an output where the reference has NaN was lost"
        elif not subset:
            np.testing.assert_array_equal(g, w, err_msg=f"{name} outputs differ")
    ok = np.isfinite(got) & np.isfinite(want)
    scale = max(float(np.abs(want[ok]).max(initial=0.0)), 1.0)
    assert np.abs(got[ok].astype(np.float64) - want[ok]).max(initial=0.0) <= TOL * scale


def _conv(ops, case, relu, training):
    *_, s, p, d, g = case
    out, _ = conv2d_forward(ops["x"], ops["w"], ops["b"], (s, s), (p, p), (d, d), g,
                            keep_cache=training, relu=relu, scale=ops["scale"],
                            residual=ops["residual"])
    return out


def _check_conv(monkeypatch, name, where, epilogue, training=False, seed=0):
    kernel, case = CONV_CASES[name]
    x, w, b, scale, residual = _operands(case, seed)
    ops = {"x": x, "w": w, "b": b, "scale": None, "residual": None}
    if epilogue == "scale+residual":
        ops.update(scale=scale, residual=residual)
    ops = _poison(ops, where, np.random.default_rng(seed + 1))
    _steer(monkeypatch, kernel)
    *_, s, p, d, g = case
    with backend.use_kernels("numba"), np.errstate(invalid="ignore"):  # inf - inf: NaN
        chosen = conv_choice.plan(x.shape, w.shape, (s, s), (p, p), (d, d), g,
                                  residual.shape[2:], np.float32, training=training).forward
        assert chosen == kernel, f"plan chose {chosen}, not {kernel}"
        got = _conv(ops, case, True, training)
    with backend.use_kernels("numpy"), np.errstate(invalid="ignore"):
        ref = _conv(ops, case, True, training)
    torch_ref = _torch_conv(ops, case, True)
    _assert_same_class(ref, torch_ref)                       # the reference path itself
    hit = np.isnan(ref)
    assert hit.any() and not hit.all()          # the poison reached some outputs, not all
    # a Winograd tile spreads an infinite or NaN input over all its outputs
    _assert_same_class(got, ref, subset=kernel == "winograd4" and where in ("x", "w"))
    return got


@pytest.mark.parametrize("name", list(CONV_CASES))
@pytest.mark.parametrize(("where", "epilogue"), [
    ("x", "bias"), ("b", "bias"), ("x", "scale+residual"), ("b", "scale+residual"),
    ("scale", "scale+residual"), ("residual", "scale+residual")])
def test_inference_fused_relu_keeps_nan(monkeypatch, name, where, epilogue):
    """Inference (keep_cache=False): bias only, or a folded batch norm's scale and a residual
    block's shortcut, then the ReLU, all in the kernel's epilogue."""
    _check_conv(monkeypatch, name, where, epilogue)


@pytest.mark.parametrize("kernel", ["direct", "im2col"])
@pytest.mark.parametrize("where", ["x", "w", "b"])
def test_training_fused_relu_keeps_nan(monkeypatch, kernel, where):
    """The training forward (keep_cache=True, relu=True), whose kernels are direct or im2col;
    its mask is False at NaN (a 0 gradient there, as PyTorch's threshold_backward)."""
    _check_conv(monkeypatch, kernel, where, "bias", training=True)


def test_gemm1x1_transposed_epilogue_keeps_nan(monkeypatch):
    """The 1x1 layer over several samples at once writes through bias_add_transposed's pass."""
    calls = []
    real = conv_gemm.bias_add_transposed
    monkeypatch.setattr(conv_gemm, "bias_add_transposed",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    _check_conv(monkeypatch, "gemm1x1", "b", "bias")
    _check_conv(monkeypatch, "gemm1x1", "residual", "scale+residual")
    assert calls, "the case did not reach bias_add_transposed"


@pytest.mark.parametrize("training", [False, True])
def test_batchnorm_fused_relu_keeps_nan(training):
    """BN + ReLU in one pass: compiled (training statistics, or running ones) against NumPy.
    NaN, +inf and -inf in a channel's running mean or input row; in training the channel's
    statistics turn NaN and so does every output of it."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    beta = rng.standard_normal(6).astype(np.float32)
    mean = rng.standard_normal(6).astype(np.float32)
    var = rng.uniform(0.5, 2.0, 6).astype(np.float32)
    x[1, 2, 3, 3] = np.nan
    if training:
        x[0, 4, 0, 0] = np.inf
    else:
        x[0, 4, 0, 0], x[2, 1, 1, 1] = np.inf, -np.inf
        mean[5] = np.nan

    def run():
        if training:
            return batchnorm_forward_train(x, gamma, beta, 1e-5, keep_cache=False, relu=True)[0]
        return batchnorm_forward_eval(x, gamma, beta, mean, var, 1e-5, keep_cache=False,
                                      relu=True)[0]

    with backend.use_kernels("numba"):
        got = run()
    with backend.use_kernels("numpy"), np.errstate(invalid="ignore"):
        ref = run()
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    want = torch.relu(torch.nn.functional.batch_norm(
        t(x), None if training else t(mean), None if training else t(var), t(gamma), t(beta),
        training=training, eps=1e-5)).numpy()
    _assert_same_class(ref, want)
    assert np.isnan(ref).any() and not np.isnan(ref).all()
    _assert_same_class(got, ref)


@pytest.mark.parametrize("poisoned", ["layer4.1.bn1", "layer4.1.bn2"])
def test_network_nan_reaches_the_output_through_the_inference_plan(poisoned):
    """A NaN made inside a network (one channel's running mean, folded into the conv before
    it: conv + BN + ReLU, or conv + BN + shortcut + ReLU, one planned step) reaches the
    logits on the planned compiled path as on the NumPy path, instead of vanishing."""
    net = resnet(18, num_classes=7, widths=(8, 16, 16, 32), seed=1)
    dict(net.named_layers())[poisoned].buffers["running_mean"][3] = np.nan
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with backend.use_kernels("numpy"), np.errstate(invalid="ignore"):
        want = net.forward(x)
    with backend.use_kernels("numba"), np.errstate(invalid="ignore"):
        before = inference_plan.stats()
        net.forward(x)                          # makes the plan
        got = net.forward(x)                    # runs it
        after = inference_plan.stats()
    assert after["made"] == before["made"] + 1 and after["reused"] == before["reused"] + 1
    assert np.isnan(want).all()                 # the channel's NaN spreads through the convs
    _assert_same_class(got, want)
