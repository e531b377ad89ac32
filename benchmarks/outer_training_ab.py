"""A/B of the outer-product kernel (volnet/functional/compiled/outer.py) in training: per
convolution of the conv rows and the training networks, its forward pass and its dx (a
stride-1 layer's dx is a stride-1 convolution of dout with the flipped, transposed filters)
by the kernel the training plan names against the outer kernel, interleaved call by call.

    python -m benchmarks.outer_training_ab [--threads 1,2] [--repeats 7] [--only SUBSTRING]
        [--no-winograd-training] [--rows]

Prints, per layer, pass and thread count, the best wall-clock and CPU (``time.process_time``,
all threads) milliseconds of each kernel and the ratio outer / planned. The "planned" kernels
are those of the plan with the outer kernel off (``conv_choice.OUTER = False``, as
``VOLNET_OUTER=0``); a forward by im2col keeps its columns as training does (its dw
then reads them: the "dw kept/unrolled" line gives what an outer forward costs dw there).

``--rows`` instead times whole rows of ``python -m benchmarks`` (the conv rows' forward +
backward and the training steps) with the outer kernel off and on in training
(``conv_choice.OUTER``), interleaved call by call: median and best wall and CPU ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.kernels import CONV_ROWS
from volnet.functional import conv_choice, conv_gemm
from volnet.functional.compiled import direct, outer, winograd
from volnet.functional.conv import conv_output_size
from volnet.runtime import block_threads, thread_policy

# (name, N, C, H, F, K, stride, padding, dilation): the conv rows (benchmarks/kernels.py,
# depthwise and 1x1 left out) and the training nets' layers (benchmarks/nets.py, ResNet-18 b16)
LAYERS = [("row " + row[0], *row[1:9]) for row in CONV_ROWS if len(row) == 9 and row[5] > 1] + [
    ("LeNet conv1 N64 C1 28 F6 k5 p2", 64, 1, 28, 6, 5, 1, 2, 1),
    ("VGG-CIFAR N128 C3 32 F32 k3", 128, 3, 32, 32, 3, 1, 1, 1),
    ("VGG-CIFAR N128 C32 32 F32 k3", 128, 32, 32, 32, 3, 1, 1, 1),
    ("VGG-CIFAR N128 C32 16 F64 k3", 128, 32, 16, 64, 3, 1, 1, 1),
    ("VGG-CIFAR N128 C64 16 F64 k3", 128, 64, 16, 64, 3, 1, 1, 1),
    ("R18 stem N16 C3 224 F64 k7 s2", 16, 3, 224, 64, 7, 2, 3, 1),
    ("R18 N16 C64 56 F128 k3 s2", 16, 64, 56, 128, 3, 2, 1, 1),
    ("R18 N16 C128 28 F256 k3 s2", 16, 128, 28, 256, 3, 2, 1, 1),
    ("R18 N16 C256 14 F512 k3 s2", 16, 256, 14, 512, 3, 2, 1, 1),
    # probes of the rule's thresholds: taps C * K * K and filters F
    ("probe N32 C16 32 F64 k3", 32, 16, 32, 64, 3, 1, 1, 1),
    ("probe N32 C24 32 F64 k3", 32, 24, 32, 64, 3, 1, 1, 1),
    ("probe N32 C32 32 F48 k3", 32, 32, 32, 48, 3, 1, 1, 1),
    ("probe N32 C64 32 F32 k3", 32, 64, 32, 32, 3, 1, 1, 1),
    ("probe N16 C3 112 F64 k7 s2", 16, 3, 112, 64, 7, 2, 3, 1),
    ("probe N16 C8 56 F64 k5 p2", 16, 8, 56, 64, 5, 1, 2, 1),
    ("probe N16 C64 56 F128 k3", 16, 64, 56, 128, 3, 1, 1, 1),
    ("probe N16 C64 28 F64 k5 p2", 16, 64, 28, 64, 5, 1, 2, 1),
    ("probe N16 C96 14 F64 k5 p2", 16, 96, 14, 64, 5, 1, 2, 1),
    ("probe N4 C128 7 F128 k3", 4, 128, 7, 128, 3, 1, 1, 1),
    ("probe N32 C512 7 F512 k3", 32, 512, 7, 512, 3, 1, 1, 1),
    ("probe N32 C256 14 F512 k3 s2", 32, 256, 14, 512, 3, 2, 1, 1),
    ("probe N64 C512 28 F1024 k1 s2", 64, 512, 28, 1024, 1, 2, 0, 1),
    ("probe N32 C256 56 F512 k1 s2", 32, 256, 56, 512, 1, 2, 0, 1),
]


def _forward(kernel, x, w, b, st, pad, dil, out_size):
    """The training forward by ``kernel`` (with its bias; im2col keeps its columns)."""
    if kernel == "outer":
        return lambda: outer.forward(x, w, b, st, pad, dil, 1, out_size)
    if kernel == "direct":
        return lambda: direct.forward(x, w, b, st, pad, dil, 1, out_size)
    if kernel == "im2col":
        epi = conv_gemm.Epilogue(b, None, None, False)
        return lambda: conv_gemm.forward(x, w, st, pad, dil, 1, out_size, True, epi)
    raise ValueError(kernel)


def _input_grad(kernel, dout, w, x_shape, st, pad, dil, adjoint):
    """dx by ``kernel`` (the flipped transpose of w made inside the call, as conv.py does)."""
    if kernel == "outer":
        return lambda: outer.forward(dout, conv_gemm.flipped_transpose(w, 1), None, (1, 1),
                                     adjoint, dil, 1, x_shape[2:])
    if kernel == "direct":
        return lambda: direct.forward(dout, conv_gemm.flipped_transpose(w, 1), None, (1, 1),
                                      adjoint, dil, 1, x_shape[2:])
    if kernel == "winograd4":
        return lambda: winograd.input_grad(dout, w, adjoint, dil, x_shape[2:])
    if kernel == "im2col (flipped filters)":
        return lambda: conv_gemm.input_grad_as_conv(dout, w, x_shape, pad, dil, 1)
    if kernel == "col2im":
        return lambda: conv_gemm.input_grad_by_fold(dout, w, x_shape, st, pad, dil, 1)
    if kernel == "direct (phases)":
        return lambda: direct.input_grad(dout, w, x_shape, st, pad, dil, 1)
    raise ValueError(kernel)


def _weight_grad(pl, x, dout, w_shape, st, pad, dil, out_size):
    """dw by the plan's kernel (``pl``: a ConvPlan; im2col reading the columns its forward
    kept, where it keeps them) or by the outer kernel (``pl`` = "outer")."""
    if pl == "outer":
        return lambda: outer.weight_grad(x, dout, w_shape, st, pad, dil, 1)
    if pl.weight_grad == "winograd4":
        return lambda: winograd.weight_grad(x, dout, pad, dil)
    if pl.weight_grad == "direct":
        return lambda: direct.weight_grad(x, dout, w_shape, st, pad, dil, 1)
    kept = (conv_gemm.forward(x, np.zeros(w_shape, np.float32), st, pad, dil, 1, out_size,
                              True)[1] if pl.forward == "im2col" else None)
    return lambda: conv_gemm.weight_grad(x, dout, w_shape, st, pad, dil, 1, kept)


def _time(fns: dict, repeats: int) -> dict:
    """{name: (best wall ms, best CPU ms)}, the calls interleaved, each in a layer section."""
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeats + 1):
        for k, fn in fns.items():
            with block_threads.section():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                t1, c1 = time.perf_counter(), time.process_time()
            wall[k].append(t1 - t0)
            cpu[k].append(c1 - c0)
    return {k: (1e3 * min(wall[k][1:]), 1e3 * min(cpu[k][1:])) for k in fns}


def measure(layer, repeats, rng, winograd_training=True):
    """(plan, rows (pass, {kernel: (wall, cpu)})) of one layer (``winograd_training``: the
    plan's dx and dw may be Winograd, as conv_choice.WINOGRAD_TRAINING)."""
    _, n, c, h, f, k, s, p, d = layer
    x = rng.standard_normal((n, c, h, h), dtype=np.float32)
    w = (rng.standard_normal((f, c, k, k), dtype=np.float32) / np.float32(np.sqrt(c * k * k)))
    b = rng.standard_normal(f, dtype=np.float32)
    st, pad, dil = (s, s), (p, p), (d, d)
    out_size = (conv_output_size(h, k, s, p, d),) * 2
    saved = conv_choice.OUTER, conv_choice.WINOGRAD_TRAINING
    conv_choice.OUTER, conv_choice.WINOGRAD_TRAINING = False, winograd_training
    try:
        pl = conv_choice.plan(x.shape, w.shape, st, pad, dil, 1, out_size, np.float32,
                              training=True)
    finally:
        conv_choice.OUTER, conv_choice.WINOGRAD_TRAINING = saved
    rows = []
    fwd = {pl.forward: _forward(pl.forward, x, w, b, st, pad, dil, out_size),
           "outer": _forward("outer", x, w, b, st, pad, dil, out_size)}
    want = fwd[pl.forward]()
    want = want[0] if isinstance(want, tuple) else want
    got = fwd["outer"]()
    assert np.allclose(got, want, rtol=1e-3, atol=1e-3), "outer forward disagrees"
    rows.append(("forward", _time(fwd, repeats)))
    dout = rng.standard_normal((n, f) + out_size, dtype=np.float32)
    if pl.forward == "im2col" and pl.weight_grad == "im2col":
        _, kept = conv_gemm.forward(x, w, st, pad, dil, 1, out_size, True)
        if kept is not None:
            rows.append(("dw kept/unrolled", _time({
                "kept": lambda: conv_gemm.weight_grad(x, dout, w.shape, st, pad, dil, 1, kept),
                "unrolled": lambda: conv_gemm.weight_grad(x, dout, w.shape, st, pad, dil, 1)},
                repeats)))
    dw = {pl.weight_grad: _weight_grad(pl, x, dout, w.shape, st, pad, dil, out_size),
          "outer": _weight_grad("outer", x, dout, w.shape, st, pad, dil, out_size)}
    want, got = dw[pl.weight_grad](), dw["outer"]()
    assert np.allclose(got, want, rtol=1e-3, atol=1e-2), "outer dw disagrees"
    rows.append(("dw", _time(dw, repeats)))
    if conv_choice.adjoint_exists((k, k), st, pad, dil):
        adjoint = tuple(d * (k - 1) - p for _ in range(2))
        dx = {pl.input_grad: _input_grad(pl.input_grad, dout, w, x.shape, st, pad, dil, adjoint),
              "outer": _input_grad("outer", dout, w, x.shape, st, pad, dil, adjoint)}
        want, got = dx[pl.input_grad](), dx["outer"]()
        assert np.allclose(got, want, rtol=1e-3, atol=1e-3), "outer dx disagrees"
        rows.append(("dx", _time(dx, repeats)))
    return pl, rows


def rows_ab(threads, repeats, only):
    """Print the A/B of the conv rows and training steps (``--rows``)."""
    from benchmarks import kernels, nets, suite
    rng = np.random.default_rng(0)
    cases = [(row[0], kernels.conv_case(row, rng)[0]) for row in kernels.CONV_ROWS]
    for title, name, batch, shape in suite.TRAIN_ROWS:
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        labels = rng.integers(0, 10, batch)
        net = nets.build(name)[0]
        cases.append((title, lambda net=net, x=x, labels=labels:
                      nets.volnet_train_step(net, x, labels)))
    saved = conv_choice.OUTER
    try:
        for title, fn in cases:
            if only not in title:
                continue
            wall = {False: [], True: []}
            cpu = {False: [], True: []}
            with thread_policy.use_threads(threads):
                for rep in range(repeats + 1):
                    for on in (False, True):
                        conv_choice.OUTER = on
                        time.sleep(0.05)
                        c0, t0 = time.process_time(), time.perf_counter()
                        fn()
                        t1, c1 = time.perf_counter(), time.process_time()
                        if rep:
                            wall[on].append(1e3 * (t1 - t0))
                            cpu[on].append(1e3 * (c1 - c0))
            med = {on: statistics.median(cpu[on]) for on in cpu}
            print(f"{title[:52]:52s} t{threads} off: wall {statistics.median(wall[False]):8.1f}"
                  f" best {min(wall[False]):8.1f} cpu {med[False]:8.1f} best "
                  f"{min(cpu[False]):8.1f} | on: wall {statistics.median(wall[True]):8.1f} best "
                  f"{min(wall[True]):8.1f} cpu {med[True]:8.1f} best {min(cpu[True]):8.1f} | "
                  f"cpu on/off {med[True] / med[False]:.3f}", flush=True)
    finally:
        conv_choice.OUTER = saved


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-winograd-training", action="store_true",
                        help="against the plan with VOLNET_WINOGRAD_TRAINING=0")
    parser.add_argument("--rows", action="store_true",
                        help="the conv rows and training steps, outer off and on")
    args = parser.parse_args(argv)
    if args.rows:
        for t in (int(v) for v in args.threads.split(",")):
            rows_ab(t, args.repeats, args.only)
        return
    rng = np.random.default_rng(0)
    for layer in LAYERS:
        if args.only not in layer[0]:
            continue
        for t in (int(v) for v in args.threads.split(",")):
            with thread_policy.use_threads(t):
                _, rows = measure(layer, args.repeats, rng, not args.no_winograd_training)
            for what, res in rows:
                (a, ra), (b_, rb) = res.items()
                print(f"{layer[0]:40s} t{t} {what:17s} {a:>24s} {ra[0]:7.2f} wall "
                      f"{ra[1]:7.2f} cpu | {b_:8s} {rb[0]:7.2f} wall {rb[1]:7.2f} cpu | "
                      f"ratio wall {rb[0] / ra[0]:.2f} cpu {rb[1] / ra[1]:.2f}", flush=True)


if __name__ == "__main__":
    main()
