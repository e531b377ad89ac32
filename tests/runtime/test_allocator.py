"""glibc's malloc thresholds set at the first backward or the first inference plan
(volnet.runtime.allocator), unless the user set them: each case in a fresh process, since
the settings are per process."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")

CODE = """
import sys
import numpy as np
import volnet as vn
from volnet.runtime import allocator
net = vn.Sequential(vn.Conv2d(1, 4, 3, rng=0), vn.ReLU(), vn.Flatten(), vn.Linear(4 * 36, 3, rng=0))
x = np.ones((2, 1, 8, 8), np.float32)
print(allocator._state["done"])
if sys.argv[1] == "inference":       # the first forward makes the inference plan
    net.forward(x)
else:
    net.forward(x, training=True)
    net.backward(np.ones((2, 3), np.float32))
print(allocator._state["done"], allocator.keep_freed_memory())
"""


def _run(extra, first="backward"):
    env = {k: v for k, v in os.environ.items()     # (plans on, compiled kernels as installed)
           if not (k.startswith("MALLOC_") or k in ("GLIBC_TUNABLES", "VOLNET_PLAN",
                                                     "VOLNET_KERNELS"))}
    out = subprocess.run([sys.executable, "-c", CODE, first], env={**env, **extra}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("first", ["backward", "inference"])
def test_first_backward_or_plan_keeps_freed_memory_in_the_process(first):
    assert _run({}, first) == ["False", "set", "True"]


@pytest.mark.parametrize("setting", [{"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_the_users_malloc_settings_stand(setting):
    assert _run(setting) == ["False", "skipped", "False"]
    assert _run(setting, "inference") == ["False", "skipped", "False"]
