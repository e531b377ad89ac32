"""Conv rows on one thread, timed in CPU seconds: NumPy reference vs compiled kernels vs PyTorch.

For a shared, overloaded machine, where wall-clock ratios of the main suite measure the
scheduler more than the code: everything runs on one thread (BLAS via threadpoolctl,
numba, torch) and each call is timed with ``time.process_time`` (this process's CPU
time), over ``repeats`` consecutive calls after one warm-up, the three sides interleaved.
Cache and memory-bandwidth sharing with other processes still add noise: see the spread.

Run: python -m benchmarks.conv_cpu [--repeats 3] [--json PATH] [row substrings...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numba
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from benchmarks import kernels
from volnet.runtime import backend


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(row, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    fns, errs = {}, {}
    for side in ("numpy", "numba"):
        with backend.use_kernels(side):
            v_fn, t_fn, err, _ = kernels.conv_case(row, rng)
        fns[side], errs[side] = v_fn, err
        fns["torch"] = t_fn
    samples = {k: [] for k in fns}

    def call(side):
        with backend.use_kernels("numba" if side == "torch" else side):
            return _cpu(fns[side])

    for side in fns:
        call(side)                                   # warm-up (and numba compile)
    for r in range(repeats):
        for side in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            samples[side].append(call(side))
    med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    with backend.use_kernels("numba"):
        used = kernels.conv_kernels(row)
    return {"name": row[0], "numpy_ms": round(med["numpy"], 1), "numba_ms": round(med["numba"], 1),
            "torch_ms": round(med["torch"], 1),
            "ratio_before": round(med["numpy"] / med["torch"], 2),
            "ratio_after": round(med["numba"] / med["torch"], 2),
            "spread_ms": {k: [round(min(v) * 1e3, 1), round(max(v) * 1e3, 1)]
                          for k, v in samples.items()},
            "max_rel_err": {k: float(f"{v:.1e}") for k, v in errs.items()},
            "kernel": used["forward"], "kernels": used, "numba": numba.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("rows", nargs="*", help="substrings of row names (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    records = []
    with threadpool_limits(1):
        print(f"{'case':52s} {'numpy':>9s} {'numba':>9s} {'torch':>9s} before after  kernel")
        for row in kernels.CONV_ROWS:
            if args.rows and not any(s in row[0] for s in args.rows):
                continue
            rec = measure(row, args.repeats)
            records.append(rec)
            print(f"{rec['name'][:52]:52s} {rec['numpy_ms']:9.1f} {rec['numba_ms']:9.1f} "
                  f"{rec['torch_ms']:9.1f} {rec['ratio_before']:6.2f} {rec['ratio_after']:5.2f}  "
                  f"{rec['kernel']}  spread {rec['spread_ms']}", flush=True)
    for key in ("ratio_before", "ratio_after"):
        all_rows = [r[key] for r in records]
        three = [r[key] for r in records if " F3 " in r["name"]]
        geo = float(np.exp(np.mean(np.log(all_rows)))) if all_rows else float("nan")
        print(f"{key}: geomean {geo:.2f}, worst {max(all_rows, default=0):.2f}, "
              f"worst 3x3 {max(three, default=0):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
