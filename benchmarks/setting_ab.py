"""In-process A/B of one module-level setting (a kernel switch or threshold) on a network's
inference forward or training step (benchmarks/README.md, section 60): the values are
switched call by call in one process, each call after the suite's idle gap
(``timing.GAP_S``), so a shared host's drift hits every value alike.

    python -m benchmarks.setting_ab volnet.runtime.block_threads.SPLIT_MIN_AWAKE=33554432,4194304
        [--net googlenet] [--batch 1] [--shape 3x224x224] [--rounds 30] [--train]

Inference first checks that every value gives the same scores as the first (up to float32
rounding: a kernel switch changes the order of sums); a training step is timed beside
PyTorch's, whose median is the ratio's denominator. Prints each value's median and best ms.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import numpy as np

from . import nets, timing


def _setting(text: str):
    """``package.module.NAME=v1,v2,...`` -> (module, NAME, [values]); values are ints,
    floats, or True/False."""
    target, sep, values = text.partition("=")
    module_name, _, attr = target.rpartition(".")
    if not sep or not module_name or not attr or not values:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not module.NAME=v1,v2 (e.g. "
            f"volnet.functional.conv_choice.POINTWISE=False,True)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise argparse.ArgumentTypeError(f"cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise argparse.ArgumentTypeError(f"{module_name} has no setting {attr!r}")

    def parse(v):
        v = v.strip()
        if v in ("True", "False"):
            return v == "True"
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{v!r} is not a number or True/False") from None

    return module, attr, [parse(v) for v in values.split(",")]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main() -> None:
    from volnet.models import MODELS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", type=_setting, help="module.NAME=v1,v2,...")
    parser.add_argument("--net", default="googlenet", choices=sorted(set(MODELS) | set(nets.LOCAL)))
    parser.add_argument("--batch", type=_positive, default=1)
    parser.add_argument("--shape", type=nets.input_shape, default=(3, 224, 224))
    parser.add_argument("--rounds", type=_positive, default=30)
    parser.add_argument("--train", action="store_true", help="time training steps")
    args = parser.parse_args()
    module, attr, values = args.setting
    rng = np.random.default_rng(0)
    if args.train:
        volnet_fn, torch_fn, *_ = nets.train_case(args.net, args.batch, args.shape, rng)
    else:
        net = nets.build(args.net)[0]
        x = rng.standard_normal((args.batch, *args.shape), dtype=np.float32)

        def volnet_fn():
            return net.forward(x)
        torch_fn = None
    before = getattr(module, attr)
    try:
        def call(value):
            setattr(module, attr, value)
            return volnet_fn()

        if not args.train:
            outs = [call(v) for v in values]
            scale = float(np.abs(outs[0]).max()) or 1.0
            worst = max(float(np.abs(o - outs[0]).max()) / scale for o in outs)
            print(f"scores agree across the values to {worst:.1e} (relative)")
            if worst > 1e-3:
                raise SystemExit("the values give different scores: not a kernel switch")
        for _ in range(3):
            for v in values:
                call(v)
        times = {i: [] for i in range(len(values))}
        torch_times = []
        for r in range(args.rounds):
            order = range(len(values)) if r % 2 == 0 else reversed(range(len(values)))
            for i in order:
                time.sleep(timing.GAP_S)
                setattr(module, attr, values[i])
                start = time.perf_counter()
                volnet_fn()
                times[i].append(time.perf_counter() - start)
            if torch_fn is not None:
                time.sleep(timing.GAP_S)
                start = time.perf_counter()
                torch_fn()
                torch_times.append(time.perf_counter() - start)
    finally:
        setattr(module, attr, before)
    what = "training step" if args.train else "inference"
    print(f"{args.net} batch {args.batch} {what}, {args.rounds} rounds")
    for i, v in enumerate(values):
        median = statistics.median(times[i])
        ratio = (f", ratio to PyTorch {median / statistics.median(torch_times):.3f}"
                 if torch_times else "")
        print(f"  {attr}={v}: median {median * 1e3:.2f} ms, best {min(times[i]) * 1e3:.2f}"
              f"{ratio}")


if __name__ == "__main__":
    main()
