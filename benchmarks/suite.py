"""Runs every case, checks agreement, prints the table and writes the JSON records.

Record: {"name", "group", "volnet", "torch", "unit", "ratio"} with ratio = volnet
time (or peak memory) / PyTorch's, lower is better; extra keys: "max_rel_err"
(volnet vs PyTorch on identical inputs and weights) and, for conv rows,
"volnet_gflops" (equivalent GFLOP/s of fwd+bwd). Network rows also name their
convolutions' kernels ("conv_kernels"), say whether the timed calls reused their conv
plans and Winograd filter transforms ("plans_reused", "plans_made", "transforms_reused",
"transforms_made") and, at inference, the network's execution plan ("net_plans_reused",
"net_plans_made": volnet/layers/inference_plan.py), and inference rows carry onnxruntime's columns ("onnxruntime" img/s,
"ratio_onnxruntime" = volnet time / onnxruntime's, its spread, session creation time and
error against volnet's scores; benchmarks/onnx_peer.py). Memory rows say what they measure
("method", "mode": training or inference); inference memory rows compare the first forward's
peak growth and carry a later call's ("volnet_later_mb", "torch_later_mb", "ratio_later") and
volnet's weight cache after the first call ("volnet_weight_cache_mb"; benchmarks/memory.py).
"""

from __future__ import annotations

import json
import math
import os
import platform

import numpy as np
import torch

from benchmarks import kernels, memory, nets, onnx_peer, timing
from benchmarks.timing import time_pair
from volnet.runtime import backend

try:
    import numba
    NUMBA_VERSION = numba.__version__
except ImportError:
    NUMBA_VERSION = None

TOLERANCE = 1e-3      # float32 results must agree this closely (relative to the largest value)
TRAIN_TOLERANCE = 1e-2   # first-layer gradient of a deep BN net in float32, against float64
#                          (PyTorch's own float32 error on ResNet-18 there: 3.6e-3 to 5.1e-3)


def _record(name, group, volnet, torch_value, unit, ratio, err, tol=TOLERANCE, **extra):
    rec = {"name": name, "group": group, "volnet": round(volnet, 3), "torch": round(torch_value, 3),
           "unit": unit, "ratio": round(ratio, 3), "max_rel_err": float(f"{err:.2e}"),
           "kernels": backend.active(), "numba": NUMBA_VERSION}
    rec.update(extra)
    print(f"  {name:58s} {volnet:10.1f} {torch_value:10.1f} {unit:6s} {ratio:6.2f}   err {err:.1e}"
          + (f"  onnxruntime {extra['onnxruntime']:.1f} (ratio {extra['ratio_onnxruntime']:.2f})"
             if "onnxruntime" in extra else "")
          + (f"  {extra['kernel']}" if "kernel" in extra else "")
          + (f"  convs {extra['conv_kernels']}, plans reused {extra['plans_reused']} made "
             f"{extra['plans_made']}" if "conv_kernels" in extra else "")
          + (f", net plan reused {extra['net_plans_reused']}"
             if extra.get("net_plans_reused") else "")
          + (f"  spread {extra['volnet_spread']} vs {extra['torch_spread']}"
             if "volnet_spread" in extra else "")
          + (f"  later call {extra['volnet_later_mb']} vs {extra['torch_later_mb']} MB"
             if "volnet_later_mb" in extra else ""), flush=True)
    if not err <= tol:
        raise SystemExit(f"{name}: volnet and PyTorch disagree (max relative error {err:.2e})")
    return rec


def conv_rows(rng, repeats):
    yield "gemm", _gemm_row(rng, repeats)
    for row in kernels.CONV_ROWS:
        v_fn, t_fn, err, flops = kernels.conv_case(row, rng)
        pair = time_pair(v_fn, t_fn, repeats)
        used = kernels.conv_kernels(row)
        yield "conv", _record(row[0], "conv", pair.volnet * 1e3, pair.torch * 1e3, "ms",
                              pair.volnet / pair.torch, err,
                              volnet_gflops=round(flops / pair.volnet / 1e9, 1),
                              torch_gflops=round(flops / pair.torch / 1e9, 1),
                              kernel=used["forward"], kernels=used, numba=_numba_version(),
                              **_spread(pair))


def _kernels_line():
    from volnet.runtime import backend

    if backend.compiled():
        return f"compiled (numba {_numba_version()}) where they apply, else NumPy"
    return "NumPy reference (VOLNET_KERNELS=numpy)"


def _numba_version():
    from volnet.runtime import backend

    return backend.numba_module().__version__ if backend.compiled() else None


def _gemm_row(rng, repeats):
    v_fn, t_fn, err, flops = kernels.gemm_case(rng)
    pair = time_pair(v_fn, t_fn, repeats)
    return _record("GEMM ceiling: float32 2048^3 (NumPy @ vs torch.mm)", "conv",
                   flops / pair.volnet / 1e9, flops / pair.torch / 1e9, "GFLOP/s",
                   pair.volnet / pair.torch, err)


def _spread(pair) -> dict:
    """Fastest and slowest of each side's timed calls, as fractions of its median."""
    return {"volnet_spread": [round(min(pair.volnet_samples) / pair.volnet, 2),
                              round(max(pair.volnet_samples) / pair.volnet, 2)],
            "torch_spread": [round(min(pair.torch_samples) / pair.torch, 2),
                             round(max(pair.torch_samples) / pair.torch, 2)]}


def _kernel_rows(group, rows, case, kernel, rng, repeats):
    """One record per row of a memory-bound kernel group (pool, norm): fwd+bwd in ms."""
    for row in rows:
        v_fn, t_fn, err = case(row, rng)
        pair = time_pair(v_fn, t_fn, repeats)
        yield group, _record(row[0] + " fwd+bwd", group, pair.volnet * 1e3, pair.torch * 1e3,
                             "ms", pair.volnet / pair.torch, err, kernel=kernel, **_spread(pair))


def pool_rows(rng, repeats):
    kernel = "numba: winners in the forward pass, one scatter" if backend.compiled() else \
        "numpy: separable maxima, winners found in backward"
    return _kernel_rows("pool", kernels.POOL_ROWS, kernels.pool_case, kernel, rng, repeats)


def norm_rows(rng, repeats):
    kernel = "numba: fused BN+ReLU, one kernel per direction" if backend.compiled() else \
        "numpy: batch norm, then ReLU mask"
    return _kernel_rows("norm", kernels.NORM_ROWS, kernels.norm_case, kernel, rng, repeats)


TRAIN_ROWS = [("LeNet-5 training step, batch 64", "lenet5", 64, (1, 28, 28)),
              ("CIFAR net (cifar_example) training step, batch 128", "cifar_example", 128, (3, 32, 32)),
              ("VGG-style CIFAR net training step, batch 128", "vgg_cifar", 128, (3, 32, 32)),
              ("ResNet-18 training step 224x224, batch 16", "resnet18", 16, (3, 224, 224)),
              ("ResNet-18 training step 224x224, batch 32", "resnet18", 32, (3, 224, 224))]
INFER_ROWS = [("VGG-16 inference 224x224, batch 1", "vgg16", 1),
              ("VGG-16 inference 224x224, batch 8", "vgg16", 8),
              ("ResNet-18 inference 224x224, batch 1", "resnet18", 1),
              ("ResNet-18 inference 224x224, batch 8", "resnet18", 8),
              ("ResNet-50 inference 224x224, batch 1", "resnet50", 1),
              ("ResNet-50 inference 224x224, batch 8", "resnet50", 8),
              ("GoogLeNet inference 224x224, batch 1", "googlenet", 1),
              ("GoogLeNet inference 224x224, batch 8", "googlenet", 8)]


def _throughput(title, group, case, batch, repeats, tol=TOLERANCE, peer=None, **extra):
    """One img/s record; ``peer(repeats)`` adds the onnxruntime columns (inference rows).
    The record names the conv kernels of the timed pass and says whether the timed calls
    reused their conv plans and Winograd filter transforms (made once, in the warm-up)."""
    v_fn, t_fn, err, net, x = case
    training = group == "train"
    used = nets.conv_kernels_used(net, x, training)
    v_fn()                                       # plans and transforms made here ...
    since = nets.reuse_probe()
    pair = time_pair(v_fn, t_fn, repeats)
    reuse = since()                              # ... and reused by every timed call
    if peer is not None:
        ort = peer(x, max(repeats, 5))
        extra.update(onnxruntime=round(batch / ort["median"], 3),
                     ratio_onnxruntime=round(pair.volnet / ort["median"], 3),
                     onnxruntime_spread=[round(min(ort["samples"]) / ort["median"], 2),
                                         round(max(ort["samples"]) / ort["median"], 2)],
                     onnxruntime_session_s=round(ort["session_s"], 3),
                     onnxruntime_err=float(f"{ort['max_rel_err']:.2e}"),
                     onnxruntime_version=ort["version"])
        if not ort["max_rel_err"] <= tol:
            raise SystemExit(f"{title}: onnxruntime and volnet disagree "
                             f"(max relative error {ort['max_rel_err']:.2e})")
    return _record(title, group, batch / pair.volnet, batch / pair.torch, "img/s",
                   pair.volnet / pair.torch, err, tol, conv_kernels=used, **reuse, **extra,
                   **_spread(pair))


def train_rows(rng, repeats, big_repeats):
    for title, name, batch, shape in TRAIN_ROWS:
        reps = big_repeats if name == "resnet18" else repeats
        v_fn, t_fn, err, torch_err, net, x = nets.train_case(name, batch, shape, rng)
        # err: volnet's float32 step against the float64 step; torch_rel_err: PyTorch's
        yield "train", _throughput(title, "train", (v_fn, t_fn, err, net, x), batch, reps,
                                   TRAIN_TOLERANCE, torch_rel_err=float(f"{torch_err:.2e}"))


def infer_rows(rng, repeats, threads=2, names=None):
    """Inference rows (``names``: only these models), each with onnxruntime's columns."""
    for title, name, batch in INFER_ROWS:
        if names and name not in names:
            continue
        case = nets.infer_case(name, batch, (3, 224, 224), rng)
        net = case[3]

        def peer(x, reps, net=net):
            return onnx_peer.time_onnxruntime(net, x, threads, reps, timing.GAP_S)

        yield "infer", _throughput(title, "infer", case, batch, repeats, peer=peer)


INFER_MEMORY_BATCHES = (1, 8)     # ResNet-50 inference at 224x224


def memory_rows():
    """Peak RSS growth, each library in its own fresh process (benchmarks/memory.py): one
    ResNet-18 training step, and ResNet-50's first inference forward at each batch (the
    ratio's), with a later call's growth alongside (``volnet_later_mb``, ``torch_later_mb``)."""
    v = memory.peak_in_subprocess("volnet", 16)
    t = memory.peak_in_subprocess("torch", 16)
    how = "RSS high-water growth in a fresh process" + ("" if v["exact_reset"] else " (ru_maxrss)")
    yield "memory", _record("ResNet-18 training step 224x224 b16: peak memory", "memory",
                            v["peak_mb"], t["peak_mb"], "MB", v["peak_mb"] / t["peak_mb"], 0.0,
                            method=how, mode="training")
    for batch in INFER_MEMORY_BATCHES:
        v = memory.peak_in_subprocess("volnet", batch, inference=True)
        t = memory.peak_in_subprocess("torch", batch, inference=True)
        how = ("RSS high-water growth over the first forward at this shape, in a fresh process "
               "warmed up on a copy" + ("" if v["exact_reset"] else " (ru_maxrss)"))
        yield "memory", _record(
            f"ResNet-50 inference 224x224 b{batch}: peak memory, first call", "memory",
            v["first_mb"], t["first_mb"], "MB", v["first_mb"] / t["first_mb"], 0.0,
            method=how, mode="inference", volnet_later_mb=round(v["later_mb"], 1),
            torch_later_mb=round(t["later_mb"], 1),
            ratio_later=round(v["later_mb"] / max(t["later_mb"], 1e-3), 3),
            volnet_weight_cache_mb=round(v["weight_cache_mb"], 1))


def summarise(records):
    """Per-group verdicts against the issue's targets."""
    by = {}
    for r in records:
        if r["unit"] != "GFLOP/s":
            group = "memory (inference)" if r.get("mode") == "inference" else r["group"]
            by.setdefault(group, []).append(r["ratio"])
    lines = []
    if "conv" in by:
        geo = math.exp(sum(math.log(x) for x in by["conv"]) / len(by["conv"]))
        three = [r["ratio"] for r in records if r["group"] == "conv" and " F3 " in r["name"]
                 and "depthwise" not in r["name"]]
        lines.append(f"conv: geometric mean {geo:.2f} (target <= 0.7), worst {max(by['conv']):.2f}"
                     f" (<= 1.0), worst 3x3 {max(three, default=float('nan')):.2f} (<= 0.8)")
    for group, target in (("pool", 0.8), ("norm", 0.8), ("train", 0.8), ("infer", 0.8),
                          ("memory", 1.2), ("memory (inference)", 1.0)):
        if group in by:
            lines.append(f"{group}: worst {max(by[group]):.2f} (target <= {target})")
    ort = [r["ratio_onnxruntime"] for r in records if "ratio_onnxruntime" in r]
    if ort:
        lines.append(f"infer vs onnxruntime: worst {max(ort):.2f} (target <= 1.0)")
    return lines


def run_suite(args) -> int:
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    groups = set(args.only.split(","))
    small, big = (3, 2) if args.quick else (7, 4)
    timing.MIN_TIMED_S = 0.3 if args.quick else 1.0
    print(f"volnet vs PyTorch {torch.__version__} CPU, {args.threads} threads "
          f"(OMP/OPENBLAS/MKL_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
          f"torch.set_num_threads({args.threads})), NumPy {np.__version__}, {platform.machine()}, "
          f"{'quick' if args.quick else 'full'} run; medians of interleaved repeats; volnet "
          f"kernels: {_kernels_line()}")
    print(f"  {'case':58s} {'volnet':>10s} {'torch':>10s} {'unit':6s} {'ratio':>6s}")
    records = []
    sources = [("conv", lambda: conv_rows(rng, small * 2 + 1)), ("pool", lambda: pool_rows(rng, small * 2 + 1)),
               ("norm", lambda: norm_rows(rng, small * 2 + 1)),
               ("train", lambda: train_rows(rng, small * 2 + 1, big)),
               ("infer", lambda: infer_rows(rng, big, args.threads)),
               ("memory", memory_rows)]
    for group, source in sources:
        if group in groups or (group == "conv" and "gemm" in groups):
            for kind, rec in source():
                if kind in groups:
                    records.append(rec)
    for line in summarise(records):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0
