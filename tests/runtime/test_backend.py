"""Kernel choice: "auto" leaves numba unloaded for small calls (start-up), loads it for large ones."""

import os
import subprocess
import sys

import pytest

from volnet.runtime import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")

SMALL_NET = ("import sys, numpy as np, volnet as vn; "
             "net = vn.Sequential(vn.Conv2d(1, 6, 5), vn.ReLU(), vn.MaxPool2d(2), vn.Flatten(), "
             "vn.Linear(6 * 12 * 12, 10)); out = net.forward(np.ones((1, 1, 28, 28), np.float32)); ")


def _run(code, kernels):
    env = {**os.environ, "VOLNET_KERNELS": kernels}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_small_inference_never_imports_numba_under_auto():
    assert _run(SMALL_NET + "print('numba' in sys.modules, out.shape[1])", "auto") == \
        ["False", "10"]
    # a call of COMPILED_MIN elements or more loads the compiled kernels
    big = SMALL_NET + ("from volnet.functional import activation as A; "
                       "A.relu_forward(np.ones(1 << 14, np.float32)); print('numba' in sys.modules)")
    assert _run(big, "auto") == ["True"]
    assert _run(SMALL_NET + "print('numba' in sys.modules)", "numba") == ["True"]


def test_size_rule_only_under_auto():
    with backend.use_kernels("auto"):
        assert not backend.compiled(backend.COMPILED_MIN - 1)
        assert backend.compiled(backend.COMPILED_MIN) and backend.compiled()
        assert backend.fusing()
    with backend.use_kernels("numba"):
        assert backend.compiled(1)
    with backend.use_kernels("numpy"):
        assert not backend.compiled(1 << 30) and not backend.fusing()
