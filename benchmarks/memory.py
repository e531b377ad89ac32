"""Peak memory of one ResNet-18 training step, each library in its own fresh process.

Both sides are measured the same way: the process builds the model and a batch,
runs one step on a tiny batch (2x3x64x64: one-time code loading, such as numba
compiling or loading its kernels, is not training memory), records its resident set size (RSS), resets the kernel's high-water mark
(``/proc/self/clear_refs``), runs one training step and reads the new
high-water mark (``VmHWM``). The record is the peak *growth* of RSS during the
step in MB: activations, caches, gradients and temporaries, not the weights or
the libraries themselves. Where the high-water mark cannot be reset, the
lifetime peak ``ru_maxrss`` is used instead (it then includes model building).

Run one side by hand: ``python -m benchmarks.memory volnet 16``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(side: str, batch: int, size: int = 224) -> dict:
    """Build ResNet-18 and a batch, then return the RSS growth (MB) of one training step."""
    import numpy as np

    from benchmarks import nets

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    labels = rng.integers(0, 10, batch)
    net, tnet = nets.build("resnet18")
    small = np.ascontiguousarray(x[:2, :, :64, :64])
    if side == "volnet":
        del tnet
        step = lambda: nets.volnet_train_step(net, x, labels)
        warm = lambda: nets.volnet_train_step(net, small, labels[:2])
    else:
        import torch

        del net
        xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
        tnet.train()
        step = lambda: nets.torch_train_step(tnet, xt, yt)
        warm = lambda: nets.torch_train_step(tnet, torch.from_numpy(small), yt[:2])
    warm()      # one tiny step first: numba loads (or compiles) its kernels, oneDNN its code
    gc.collect()
    before = _status_kb("VmRSS")
    exact = _reset_peak()
    step()
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"side": side, "peak_mb": (peak - before) / 1024, "exact_reset": exact}


def peak_in_subprocess(side: str, batch: int) -> dict:
    """Run :func:`measure` in a fresh interpreter (same environment and threads)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", side, str(batch)],
                         capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
