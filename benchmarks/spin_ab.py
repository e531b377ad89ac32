"""In-process A/B of the block threads' waiting settings (benchmarks/README.md, section 59):
the spin before sleeping (``block_threads.SPIN_US``) and the training max pools' plane split
(``launch.PLANES_SPLIT_MIN`` / ``PLANES_SPLIT_ASLEEP``), switched step by step in one process
so a shared host's drift hits every setting alike.

    python -m benchmarks.spin_ab [--net lenet5] [--batch 64] [--shape 1x28x28] [--rounds 40]
        [--infer]

Each round times one call per setting and one PyTorch call, each after the suite's idle gap
(``timing.GAP_S``); prints each setting's median ms and its ratio to PyTorch's median.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from volnet.runtime import block_threads, launch

from . import nets, timing

OFF = 1 << 62     # a threshold no call reaches
SETTINGS = {
    "no spin, no plane split": {"SPIN_US": 0.0, "PLANES_SPLIT_MIN": OFF,
                                "PLANES_SPLIT_ASLEEP": OFF},
    "spin": {"SPIN_US": 1000.0, "PLANES_SPLIT_MIN": OFF, "PLANES_SPLIT_ASLEEP": OFF},
    "spin + pools on block threads": {"SPIN_US": 1000.0,
                                      "PLANES_SPLIT_MIN": launch.PLANES_SPLIT_MIN,
                                      "PLANES_SPLIT_ASLEEP": launch.PLANES_SPLIT_ASLEEP},
}


def _apply(setting: dict) -> None:
    block_threads.SPIN_US = setting["SPIN_US"]
    launch.PLANES_SPLIT_MIN = setting["PLANES_SPLIT_MIN"]
    launch.PLANES_SPLIT_ASLEEP = setting["PLANES_SPLIT_ASLEEP"]
    block_threads.stop_spinning()      # no spin of the previous setting runs into this one


def _timed(fn) -> float:
    time.sleep(timing.GAP_S)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from volnet.models import MODELS
    names = sorted(set(MODELS) | set(nets.LOCAL))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="lenet5", choices=names, metavar="NET",
                        help="a zoo model or vgg_cifar: " + ", ".join(names))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--shape", type=nets.input_shape, default=(1, 28, 28),
                        help="C x H x W of one input, e.g. 3x32x32")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--infer", action="store_true", help="inference, not a training step")
    args = parser.parse_args()
    if args.batch < 1 or args.rounds < 1:
        parser.error("--batch and --rounds must be at least 1")
    shape = args.shape
    rng = np.random.default_rng(0)
    if args.infer:
        ours, theirs, *_ = nets.infer_case(args.net, args.batch, shape, rng)
    else:
        ours, theirs, *_ = nets.train_case(args.net, args.batch, shape, rng)
    saved = {"SPIN_US": block_threads.SPIN_US, "PLANES_SPLIT_MIN": launch.PLANES_SPLIT_MIN,
             "PLANES_SPLIT_ASLEEP": launch.PLANES_SPLIT_ASLEEP}
    times: dict[str, list] = {name: [] for name in SETTINGS}
    torch_times = []
    try:
        for setting in SETTINGS.values():      # warm-up: compiled kernels, plans, caches
            _apply(setting)
            ours()
            ours()
        theirs()
        theirs()
        for _ in range(args.rounds):
            for name, setting in SETTINGS.items():
                _apply(setting)
                times[name].append(_timed(ours))
            torch_times.append(_timed(theirs))
    finally:
        _apply(saved)
    torch_ms = statistics.median(torch_times) * 1e3
    kind = "inference" if args.infer else "training step"
    print(f"{args.net} batch {args.batch} {kind}: PyTorch median {torch_ms:.2f} ms")
    for name, samples in times.items():
        ms = statistics.median(samples) * 1e3
        print(f"  {name:32s} {ms:8.2f} ms  ratio {ms / torch_ms:.3f}")


if __name__ == "__main__":
    main()
