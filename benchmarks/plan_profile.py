"""Per-step profile of a network's inference plan (volnet/layers/inference_plan.py): every
step timed, each convolution with its forward kernel (conv_choice.plan), GFLOP/s and the
page faults it took, then the time grouped by kind (1x1 by output map and stride, 3x3, stem,
pools, FC).

    python -m benchmarks.plan_profile [--threads 2] [--net resnet50] [--batch 1]
        [--repeats 10] [--size 224] [--groups-only] [--onnxruntime] [--gap 0.1]

``--onnxruntime`` adds onnxruntime's time for the same layer (its profiler's node times on
volnet's ONNX export, same threads, in a process of its own; benchmarks/onnx_peer.py), each
convolution matched to the first unmatched Conv node with the same input and filter
shapes, and the sums of both per group.

Wall clock per step (``time.perf_counter`` around the step, summed over the repeats) and the
whole forward's wall and CPU time; the machine's load average is printed with them. A group
of Concat branches is one step (its wall time), then its branches' steps each on its own
line and in its kind's group with its own time: at batch 1 they run side by side on two
threads, so their times overlap the group's (the "steps" total counts the group only).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from volnet.functional import conv_choice
from volnet.functional.conv import conv_output_size
from volnet.layers import inference_plan
from volnet.layers.conv import Conv2d
from volnet.models import googlenet, resnet18, resnet50, vgg16
from volnet.runtime import thread_policy

from . import onnx_peer, timing

NETS = {"resnet18": resnet18, "resnet50": resnet50, "googlenet": googlenet, "vgg16": vgg16}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _conv_of(fn):
    """The convolution a plan step runs: a fused step's ``conv``, or a Conv2d's own forward
    (one that no ReLU or batch norm follows); None for other steps."""
    conv = getattr(fn, "conv", None)
    if conv is None and isinstance(getattr(fn, "__self__", None), Conv2d):
        conv = fn.__self__
    return conv


def describe(fn, x_shape) -> tuple[str, str, float]:
    """(group, description, GFLOP) of one plan step called on an input of ``x_shape``."""
    conv = _conv_of(fn)
    if conv is None:
        layer = getattr(fn, "__self__", None) or getattr(fn, "layer", None)
        name = type(layer).__name__ if layer is not None else getattr(fn, "__name__", "step")
        return name, name, 0.0
    f, cg, kh, kw = conv.params["weight"].shape
    ho = conv_output_size(x_shape[2], kh, conv.stride[0], conv.padding[0], conv.dilation[0])
    wo = conv_output_size(x_shape[3], kw, conv.stride[1], conv.padding[1], conv.dilation[1])
    kernel = conv_choice.plan(x_shape, (f, cg, kh, kw), conv.stride, conv.padding,
                              conv.dilation, conv.groups, (ho, wo), np.float32).forward
    gflop = 2 * x_shape[0] * f * cg * kh * kw * ho * wo / 1e9
    group = ("stem" if x_shape[1] == 3 else
             f"{kh}x{kw} s{conv.stride[0]} out {ho}x{wo}")
    text = (f"conv {x_shape[1]:4d}->{f:4d} {kh}x{kw} s{conv.stride[0]} {x_shape[2]}x{x_shape[3]}"
            f"->{ho}x{wo} {kernel}")
    return group, text, gflop


def profile(net, x, repeats: int, gap: float = 0.0) -> tuple[float, float, list]:
    """(forward wall ms, forward CPU ms, [(group, description, ms, GFLOP, faults, input
    shape, filter shape or None, top level)] per step), means over ``repeats`` planned
    forwards of ``net`` on ``x`` after three warm-up calls; each forward after ``gap`` idle
    seconds (not counted), as the suite times them (``timing.GAP_S``). A group of Concat
    branches (``inference_plan._Branches`` runs them side by side at batch 1) is one row,
    its wall time, followed by its branches' steps (not top level: at batch 1 they run on
    two threads at once, so their times overlap)."""
    net.forward(x)                                      # makes the plan
    plan = next(iter(inference_plan.plans_of(net).values()))
    spent, faults, shapes, order = {}, {}, {}, []

    def timed(fn, key):
        def step(*args):
            shapes[key] = args[0].shape if isinstance(args[0], np.ndarray) else None
            f0, t0 = _faults(), time.perf_counter()
            out = fn(*args)
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
            faults[key] = faults.get(key, 0) + _faults() - f0
            return out
        return step

    groups = []     # (group of branches, its own branch lists): put back afterwards

    def wrap(steps, prefix):
        """The steps with every fn timed, a group's steps too (at any depth)."""
        wrapped = []
        for i, (fn, ins, out, frees) in enumerate(steps):
            key = prefix + (i,)
            order.append((key, fn))
            if out is None:     # a group of branches: time it whole, and its steps
                groups.append((fn, list(fn.branches)))
                for b, branch in enumerate(fn.branches):
                    fn.branches[b] = wrap(branch, key + (b,))
            wrapped.append((timed(fn, key), ins, out, frees))
        return wrapped

    original = plan.steps
    try:
        plan.steps = wrap(original, ())
        for _ in range(3):
            net.forward(x)
        spent.clear()
        faults.clear()
        wall = cpu = 0.0
        for _ in range(repeats):
            if gap:
                time.sleep(gap)
            w0, c0 = time.perf_counter(), time.process_time()
            net.forward(x)
            wall, cpu = wall + time.perf_counter() - w0, cpu + time.process_time() - c0
    finally:
        plan.steps = original
        for fn, branches in groups:
            fn.branches[:] = branches
    rows = []
    for key, fn in order:
        if shapes.get(key) is None and key in shapes:      # a group of branches
            count = sum(len(b) for b in fn.branches)
            group = text = f"Concat branches ({len(fn.branches)}, {count} steps)"
            rows.append((group, text, spent.get(key, 0.0) / repeats * 1e3, 0.0,
                         faults.get(key, 0) / repeats, None, None, True))
            continue
        group, text, gflop = describe(fn, shapes[key])
        conv = _conv_of(fn)
        rows.append((group, ("  (branch) " if len(key) > 1 else "") + text,
                     spent.get(key, 0.0) / repeats * 1e3, gflop, faults.get(key, 0) / repeats,
                     list(shapes[key]),
                     None if conv is None else list(conv.params["weight"].shape),
                     len(key) == 1))
    return wall / repeats * 1e3, cpu / repeats * 1e3, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--net", default="resnet50", choices=sorted(NETS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--groups-only", action="store_true")
    parser.add_argument("--onnxruntime", action="store_true")
    parser.add_argument("--gap", type=float, default=0.0,
                        help="idle seconds before each timed forward (the suite's is "
                             f"{timing.GAP_S})")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    net = NETS[args.net]()
    x = np.random.default_rng(0).standard_normal(
        (args.batch, 3, args.size, args.size)).astype(np.float32)
    theirs = (onnx_peer.node_times(net, x, args.threads, args.repeats) if args.onnxruntime
              else None)
    with thread_policy.use_threads(args.threads):
        wall, cpu, rows = profile(net, x, args.repeats, args.gap)
    peer = _match(rows, theirs) if theirs is not None else [None] * len(rows)
    print(f"{args.net} b{args.batch}, {args.threads} threads: forward {wall:.2f} ms "
          f"(CPU {cpu:.2f}), steps {sum(r[2] for r in rows if r[7]):.2f} ms; load average "
          f"{load:.1f} -> {os.getloadavg()[0]:.1f}")
    if theirs is not None:
        print(f"onnxruntime: nodes {sum(t[2] for t in theirs):.2f} ms, of which Conv "
              f"{sum(t[2] for t in theirs if t[0] == 'Conv'):.2f}")
    if not args.groups_only:
        for i, (_, text, ms, gflop, flt, *_rest) in enumerate(rows):
            rate = f"{gflop / ms * 1e3:6.1f} GFLOP/s" if gflop and ms else ""
            their = f"  onnxruntime {peer[i]:.3f} ms" if peer[i] is not None else ""
            print(f"{i:3d} {ms:8.3f} ms {flt:6.0f} faults  {text} {rate}{their}")
    groups: dict[str, list] = {}
    for (group, _, ms, gflop, *_rest), their in zip(rows, peer):
        g = groups.setdefault(group, [0, 0.0, 0.0, 0.0])
        g[0], g[1], g[2], g[3] = g[0] + 1, g[1] + ms, g[2] + gflop, g[3] + (their or 0.0)
    print("group                  steps       ms    GFLOP  GFLOP/s" +
          ("  onnxruntime ms" if theirs is not None else ""))
    for group, (count, ms, gflop, their) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        rate = f"{gflop / ms * 1e3:8.1f}" if gflop and ms else "        "
        peer_ms = f" {their:15.3f}" if theirs is not None and their else ""
        print(f"{group:22s} {count:5d} {ms:8.3f} {gflop:8.3f} {rate}{peer_ms}")


def _match(rows, theirs) -> list:
    """onnxruntime's ms for each convolution step (None for the rest): the first unmatched
    Conv node with the same input and filter shapes."""
    free = [t for t in theirs if t[0] == "Conv"]
    matched = []
    for *_, x_shape, w_shape, _top in rows:
        found = None
        if w_shape is not None:
            for k, (_, shapes, ms) in enumerate(free):
                if shapes[:2] == [x_shape, w_shape]:
                    found = ms
                    del free[k]
                    break
        matched.append(found)
    return matched


if __name__ == "__main__":
    main()
