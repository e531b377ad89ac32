"""Peak memory of one training step and of inference, each library in its own fresh process.

Both sides are measured the same way (:func:`peak_growth`): the process builds the model and
its input, runs a warm-up (below), collects garbage, returns the heap's free memory to the
operating system (glibc's ``malloc_trim``: else how much of the call fits in memory the
warm-up freed decides the number: PyTorch's ResNet-50 b1 forward measured 10.7 MB untrimmed,
21-34 MB trimmed; benchmarks/README.md section 53), records its resident set
size (RSS), resets the kernel's high-water mark (``/proc/self/clear_refs``), runs the call
and reads the new high-water mark (``VmHWM``). The record is the peak *growth* of RSS during
the call in MB, not the weights or the libraries themselves. Where the high-water mark
cannot be reset, the lifetime peak ``ru_maxrss`` is used instead (it then includes model
building).

* **Training** (:func:`measure`, ResNet-18): the warm-up is one step on a tiny batch
  (2x3x64x64: one-time code loading, such as numba compiling or loading its kernels, is not
  training memory); the record is one step's growth: activations, caches, gradients and
  temporaries.
* **Inference** (:func:`measure_inference`, ResNet-50 in eval mode: volnet's
  ``net.forward(x)``, PyTorch's ``eval()`` under ``torch.inference_mode()``): the warm-up
  runs a throwaway copy of the network twice on an input of the measured shape, then drops
  it. A tiny input does not do: volnet's kernels are chosen by map size, and a 64x64
  warm-up left ~18 MB of numba code to load in the first 224x224 call. The copy loads every
  kernel and makes the per-shape decisions both libraries share between networks (volnet's
  conv plans, oneDNN's primitives); what belongs to the measured network is still made in
  its first call, and volnet's per-thread work arrays (``block_threads.scratch``), which
  the copy grew, are released before it (``block_threads.release_scratch``). Both sides
  measure copies of the network (``copy.deepcopy``: PyTorch's then owns contiguous
  parameters, as a model built in PyTorch does). Recorded:
  ``first_mb``, the growth over the network's *first* forward at that shape, what a user's
  process pays for it (volnet: the unplanned forward's activations, the kernels' per-thread
  scratch, the Winograd filter transforms and packed filters kept in
  ``functional.weight_cache``, the inference plan; the output): the median over three fresh
  copies of the network in turn (``first_runs_mb``; one process's single call varied by
  ~20%), and ``later_mb``, the growth
  over a later call (volnet: the plan's run), the steady state. ``weight_cache_mb`` is what
  volnet's weight cache holds after the first call.

Run one side by hand: ``python -m benchmarks.memory volnet 16`` (training step, batch 16) or
``python -m benchmarks.memory --inference volnet 1``.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
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


def _trim_heap() -> None:
    """Give the heap's free memory back to the operating system (glibc only; elsewhere the
    measurement keeps whatever the warm-up left free)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_growth(call) -> tuple[float, bool]:
    """The peak RSS growth (MB) while ``call()`` runs, from a settled heap, and whether the
    high-water mark was reset (else the process's lifetime peak stands in)."""
    gc.collect()
    _trim_heap()
    before = _status_kb("VmRSS")
    exact = _reset_peak()
    result = call()
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    return (peak - before) / 1024, exact


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
    peak, exact = peak_growth(step)
    return {"side": side, "peak_mb": peak, "exact_reset": exact}


FIRST_CALLS = 3     # fresh copies whose first forward is measured (the record: their median)


def measure_inference(side: str, batch: int, size: int = 224, model: str = "resnet50") -> dict:
    """Build ``model`` and a batch, warm up on a copy, then return the RSS growth (MB) of a
    network's first forward at that shape (median over ``FIRST_CALLS`` fresh copies, each
    dropped before the next) and of a later one (module docstring)."""
    import numpy as np

    from benchmarks import nets

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    net, tnet = nets.build(model)
    if side == "volnet":
        from volnet.functional import weight_cache
        from volnet.runtime import block_threads

        del tnet
        run = lambda n: n.forward(x)
    else:
        import torch

        del net
        net = tnet.eval()
        xt = torch.from_numpy(x)

        def run(n):
            with torch.inference_mode():
                return n(xt)
    spare = copy.deepcopy(net)
    run(spare)                  # the unplanned path's kernels ...
    run(spare)                  # ... and the plan's (volnet); oneDNN's code and primitives
    del spare
    firsts = []
    for _ in range(FIRST_CALLS):
        fresh = None            # the previous copy (its plan, cache entries) goes first
        fresh = copy.deepcopy(net)
        if side == "volnet":    # work arrays, kept per thread, are each network's to make
            block_threads.release_scratch()
        growth, exact = peak_growth(lambda: run(fresh))
        firsts.append(growth)
    cached = weight_cache.stats()["bytes"] / 2**20 if side == "volnet" else 0.0
    run(fresh)                  # volnet: the plan's first run (its step objects are made)
    later, _ = peak_growth(lambda: run(fresh))
    return {"side": side, "model": model, "batch": batch,
            "first_mb": sorted(firsts)[len(firsts) // 2], "first_runs_mb": firsts,
            "later_mb": later, "weight_cache_mb": cached, "exact_reset": exact}


def _args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description="Peak RSS growth of one call (MB), as JSON.")
    parser.add_argument("side", choices=("volnet", "torch"))
    parser.add_argument("batch", type=int)
    parser.add_argument("--inference", action="store_true",
                        help="eval-mode forwards of --model (default: a ResNet-18 training step)")
    parser.add_argument("--model", default="resnet50", help="inference: the model (resnet50)")
    parser.add_argument("--size", type=int, default=224, help="image side (224)")
    return parser.parse_args(argv)


def peak_in_subprocess(side: str, batch: int, inference: bool = False, model: str = "resnet50",
                       size: int = 224) -> dict:
    """Run :func:`measure` (or :func:`measure_inference`) in a fresh interpreter (same
    environment and threads)."""
    cmd = [sys.executable, "-m", "benchmarks.memory", side, str(batch), "--size", str(size)]
    if inference:
        cmd += ["--inference", "--model", model]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    _a = _args()
    print(json.dumps(measure_inference(_a.side, _a.batch, _a.size, _a.model) if _a.inference
                     else measure(_a.side, _a.batch, _a.size)))
