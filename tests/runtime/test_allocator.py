"""glibc's malloc thresholds set at the first backward (volnet.runtime.allocator), unless
the user set them: each case in a fresh process, since the settings are per process."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")

CODE = """
import numpy as np
import volnet as vn
from volnet.runtime import allocator
net = vn.Sequential(vn.Conv2d(1, 4, 3, rng=0), vn.ReLU(), vn.Flatten(), vn.Linear(4 * 36, 3, rng=0))
x = np.ones((2, 1, 8, 8), np.float32)
print(allocator._state["done"])
net.forward(x)                       # inference releases nothing: nothing set
print(allocator._state["done"])
net.forward(x, training=True)
net.backward(np.ones((2, 3), np.float32))
print(allocator._state["done"], allocator.keep_freed_memory())
"""


def _run(extra):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", CODE], env={**env, **extra}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_first_backward_keeps_freed_memory_in_the_process():
    assert _run({}) == ["False", "False", "set", "True"]


@pytest.mark.parametrize("setting", [{"MALLOC_TRIM_THRESHOLD_": "1000000"},
                                     {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"}])
def test_the_users_malloc_settings_stand(setting):
    assert _run(setting) == ["False", "False", "skipped", "False"]
