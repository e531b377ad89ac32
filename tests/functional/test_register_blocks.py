"""The convolution kernels' register blocks for CPUs without AVX-512 (16 vector registers:
the outer and direct kernels' blocks take 16 filters or outputs at a time) give the same
bits as AVX-512's (up to 64), whatever CPU runs the test: each output's sum runs over the same products in the
same order. Both against PyTorch, so neither is checked only against the other."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from volnet.functional.compiled import intrinsics
from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

# (N, C, H, W, F, kernel, stride, padding, dilation, groups): filters past one block of 64
# and a partial 16 (outer), filter counts not a multiple of 8 or 6 (direct), strides,
# dilation and groups
CASES = [
    (2, 8, 9, 11, 70, 3, 1, 1, 1, 1),
    (3, 6, 12, 10, 22, 3, 2, 1, 1, 1),
    (2, 10, 13, 13, 13, 5, 1, 2, 1, 1),
    (1, 12, 9, 9, 18, 3, 1, 2, 2, 3),
]


def _operands(case, seed):
    n, c, h, wd, f, k, s, p, d, g = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, wd), dtype=np.float32)
    w = rng.standard_normal((f, c // g, k, k), dtype=np.float32)
    return x, w, rng.standard_normal(f, dtype=np.float32)


def _both(monkeypatch, run):
    """run() with AVX-512's register blocks, then AVX2's."""
    results = []
    for wide in (True, False):
        monkeypatch.setattr(intrinsics, "wide_vectors", lambda wide=wide: wide)
        results.append(run())
    return results


def _torch(x, w, b, dout, case):
    *_, s, p, d, g = case
    xt, wt = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64))
    xt.requires_grad_(), wt.requires_grad_()
    out = TF.conv2d(xt, wt, torch.from_numpy(b.astype(np.float64)), s, p, d, g)
    out.backward(torch.from_numpy(dout.astype(np.float64)))
    return out.detach().numpy(), wt.grad.numpy()


def _close(a, b):
    return np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kernel", ["outer", "direct"])
def test_narrow_blocks_give_the_same_bits(monkeypatch, case, kernel):
    from volnet.functional.compiled import direct, outer

    module = {"outer": outer, "direct": direct}[kernel]
    n, c, h, wd, f, k, s, p, d, g = case
    x, w, b = _operands(case, seed=len(kernel))
    ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
    wo = (wd + 2 * p - d * (k - 1) - 1) // s + 1
    dout = np.random.default_rng(1).standard_normal((n, f, ho, wo), dtype=np.float32)

    def run():
        out = module.forward(x, w, b, (s, s), (p, p), (d, d), g, (ho, wo))
        dw = module.weight_grad(x, dout, w.shape, (s, s), (p, p), (d, d), g)
        return out, dw

    (out_wide, dw_wide), (out_narrow, dw_narrow) = _both(monkeypatch, run)
    np.testing.assert_array_equal(out_narrow, out_wide)
    np.testing.assert_array_equal(dw_narrow, dw_wide)
    want_out, want_dw = _torch(x, w, b, dout, case)
    assert _close(out_narrow, want_out) and _close(dw_narrow, want_dw)


def test_narrow_gated_weight_grad_gives_the_same_bits(monkeypatch):
    from volnet.functional.compiled import outer

    case = CASES[0]
    n, c, h, wd, f, *_ = case
    x, w, _ = _operands(case, seed=5)
    rng = np.random.default_rng(2)
    dout = rng.standard_normal((n, f, h, wd), dtype=np.float32)
    gate = rng.random((n, f, h, wd)) > 0.4
    runs = _both(monkeypatch, lambda: outer.gated_weight_grad(
        x, dout, gate, w.shape, (1, 1), (1, 1), (1, 1), 1, keep_gated=True))
    for narrow, wide in zip(runs[1], runs[0]):
        np.testing.assert_array_equal(narrow, wide)
    _, want_dw = _torch(x, w, np.zeros(f, np.float32), np.where(gate, dout, 0), case)
    assert _close(runs[1][0], want_dw)


@pytest.mark.parametrize("name, features, wide", [
    (None, "+avx2,+fma,+avx512f,+avx512bw", True), (None, "+avx2,+fma,-avx512f", False),
    ("generic", None, False), ("host", "+sse4.2", False)])
def test_vector_width_follows_what_numba_targets(monkeypatch, name, features, wide):
    """NUMBA_CPU_FEATURES and NUMBA_CPU_NAME (numba.core.config) decide, as they decide what
    numba compiles: a named CPU without features (a portable cache) gets narrow blocks."""
    from numba.core import config

    monkeypatch.setattr(config, "CPU_NAME", name)
    monkeypatch.setattr(config, "CPU_FEATURES", features)
    intrinsics.wide_vectors.cache_clear()
    try:
        assert intrinsics.wide_vectors() is wide
    finally:
        monkeypatch.undo()
        intrinsics.wide_vectors.cache_clear()
