"""Entry point: fix thread counts in the environment, then import and run the suite."""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time volnet and PyTorch CPU side by side and print volnet/PyTorch ratios.")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under two minutes)")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries (2)")
    parser.add_argument("--only", metavar="GROUPS", default="conv,pool,norm,gemm,train,infer,memory",
                        help="comma-separated groups to run (default: all)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)      # before NumPy or torch load their BLAS
    # imported only now: it loads NumPy and torch, which read the variables above
    from benchmarks.suite import run_suite

    return run_suite(args)


if __name__ == "__main__":
    sys.exit(main())
