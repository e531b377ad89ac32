"""vn.fit with the library's thread choice vs fixed counts, while another process is busy.

Run: python -m benchmarks.fit_threads [threads...]; each setting in a fresh process
(VOLNET_THREADS=N fixes the count; "auto" leaves the choice to the library).
Prints seconds for one epoch of LeNet-5 on 1280 random 28x28 images, batch 64.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CHILD = """
import time, numpy as np, volnet as vn
from volnet.models import build
rng = np.random.default_rng(0)
x = rng.random((1280, 1, 28, 28), dtype=np.float32); y = rng.integers(0, 10, 1280)
net = build("lenet5")
vn.fit(net, x[:64], y[:64], epochs=1, batch_size=64, progress=False)   # warm-up
t = time.perf_counter()
vn.fit(net, x, y, epochs=1, batch_size=64, progress=False)
print(f"{time.perf_counter() - t:.2f}")
"""


def run(setting: str) -> float:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VOLNET_THREADS")}
    if setting != "auto":
        env["VOLNET_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(settings):
    busy = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        time.sleep(1.0)
        for setting in settings:
            times = [run(setting) for _ in range(3)]
            print(f"threads={setting:5s} epoch s: " + ", ".join(f"{t:.2f}" for t in times),
                  flush=True)
    finally:
        busy.kill()


if __name__ == "__main__":
    main(sys.argv[1:] or ["auto", "1", "2"])
