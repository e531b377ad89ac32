"""A/B of the inference plan (volnet/layers/inference_plan.py): planned against unplanned
calls of the same network on the same input, interleaved call by call in one process.

    python -m benchmarks.plan_ab [--threads 1] [--repeats 7] [--nets resnet18,googlenet]
        [--batches 1,8] [--size 224]

Prints, per network and batch, the median and best wall-clock time (ms) of each mode and
the ratio planned / unplanned; also CPU time (``time.process_time``), which other
processes' load inflates less than wall clock. ``unfused-residual`` is the plan with the
residual sums as separate steps (what the plan gains from that fusion alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from volnet.layers import inference_plan
from volnet.models import googlenet, resnet18, resnet50, vgg16
from volnet.runtime import thread_policy

NETS = {"resnet18": resnet18, "resnet50": resnet50, "googlenet": googlenet, "vgg16": vgg16}


def _modes(net, x):
    """{mode: callable} (each makes its plan on a warm-up call)."""
    unfused = inference_plan.Plan(net, residual_fusion=False)

    def unplanned():
        inference_plan.ENABLED = False
        try:
            return net.forward(x)
        finally:
            inference_plan.ENABLED = True

    modes = {"unplanned": unplanned, "planned": lambda: net.forward(x)}
    if any(type(layer).__name__ == "Residual" for _, layer in net.named_layers()):
        modes["unfused-residual"] = lambda: unfused.run(x)
    want = unplanned()
    for name, fn in modes.items():
        got = fn()
        if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise AssertionError(f"{name} differs from the unplanned output")
    return modes


def measure(name: str, batch: int, size: int, repeats: int) -> dict:
    net = NETS[name]()
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    modes = _modes(net, x)
    for fn in modes.values():
        fn()
    wall = {m: [] for m in modes}
    cpu = {m: [] for m in modes}
    for _ in range(repeats):
        for mode, fn in modes.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[mode].append(time.perf_counter() - t)
            cpu[mode].append(time.process_time() - c)
    return {m: (statistics.median(wall[m]) * 1e3, min(wall[m]) * 1e3,
                statistics.median(cpu[m]) * 1e3) for m in modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--nets", default="resnet18,resnet50,googlenet,vgg16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} at start")
    with thread_policy.use_threads(args.threads):
        for name in args.nets.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                res = measure(name, batch, args.size, args.repeats)
                base = res["unplanned"]
                cells = "  ".join(f"{m} {med:.1f}/{best:.1f} (cpu {c:.1f})"
                                  for m, (med, best, c) in res.items())
                ratio = res["planned"][0] / base[0]
                ratio_best = res["planned"][1] / base[1]
                print(f"{name} b{batch}: {cells}  planned/unplanned median {ratio:.3f} "
                      f"best {ratio_best:.3f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
