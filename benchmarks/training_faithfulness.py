"""Training faithfulness with Winograd in the backward pass: the adversarial replay over seeds.

The replay (tests/functional/test_training_faithfulness.py): a small CIFAR-style network
trains 50 SGD steps at lr 0.02, momentum 0.9, on random data; the divergence of its final
float32 parameters from the float64 run is compared with PyTorch float32's divergence
from PyTorch float64 (PyTorch is the oracle only). This study runs it over several seeds
(filters and data) and four kernel settings of the backward pass, on two networks:

* ``narrow``: the test's 3-16-32-32 network, with Winograd forced onto dx and dw of conv2
  and conv3 (today's plan gives these layers the direct kernel);
* ``wide``: 3-64-64-64, where today's plan itself picks Winograd for conv2's dx and dw
  and conv3's dx (thresholds untouched; an "off" pass has its threshold raised out of reach).

Settings: ``exact`` (Winograd off: the direct kernel / im2col), ``dx`` (Winograd dx only),
``dw`` (Winograd dw only), ``both``. A training forward never runs Winograd
(conv_choice.plan). The kernels that really ran are counted (calls of
winograd.forward / winograd.weight_grad) and printed with each row.

Run: python -m benchmarks.training_faithfulness [--seeds 8] [--first-seed 0]
[--nets narrow,wide] [--settings exact,dx,dw,both] (one thread; ~10 minutes for 8 seeds
of both networks on the loaded 2-core machine). Results: benchmarks/README.md, section 35.

``--speed`` instead times what the exact backward costs: training steps (forward,
backward, SGD update; benchmarks.nets.volnet_train_step) of the VGG-style CIFAR net at
batch 128 and ResNet-18 at batch 16, with conv_choice.WINOGRAD_TRAINING off and on (the
default), interleaved step by step in one process (set the thread variables to 1 first).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np

import volnet as vn
from volnet.functional import conv_choice
from volnet.functional.compiled import outer, winograd
from volnet.runtime import backend

STEPS, BATCH, LR, MOMENTUM = 50, 16, 0.02, 0.9
WIDTHS = {"narrow": (16, 32, 32), "wide": (64, 64, 64)}
SETTINGS = ("exact", "dx", "dw", "both")
OUT_OF_REACH = 1 << 40


def build(widths, seed, dtype):
    """The replay network: three 3x3 convs of ``widths`` channels (two 2x2 max pools),
    a linear classifier; filters drawn from ``seed``."""
    a, b, c = widths
    net = vn.Sequential(vn.Conv2d(3, a, 3, padding=1, rng=4 * seed), vn.ReLU(),
                        vn.Conv2d(a, b, 3, padding=1, rng=4 * seed + 1), vn.ReLU(),
                        vn.MaxPool2d(2),
                        vn.Conv2d(b, c, 3, padding=1, rng=4 * seed + 2), vn.ReLU(),
                        vn.MaxPool2d(2),
                        vn.Flatten(), vn.Linear(c * 8 * 8, 10, rng=4 * seed + 3))
    return net.astype(dtype)


def data(seed):
    """(inputs (STEPS, BATCH, 3, 32, 32), labels (STEPS, BATCH)) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((STEPS, BATCH, 3, 32, 32)),
            rng.integers(0, 10, (STEPS, BATCH)))


def settings_constants(net_name, setting):
    """{conv_choice constant: value} giving ``setting`` on the ``net_name`` network."""
    dx, dw = setting in ("dx", "both"), setting in ("dw", "both")
    values = {"WINOGRAD": setting != "exact", "WINOGRAD_TRAINING": True}
    if net_name == "narrow":     # force Winograd where the channels are too few for the plan
        # (the outer kernel off: it would take these small maps' dw from Winograd)
        values.update(DIRECT_WINOGRAD_CHANNELS=8, WINOGRAD_MIN_WORK=0, OUTER=False)
        values.update(WINOGRAD_MIN_TILES=1 if dx else OUT_OF_REACH,
                      WINOGRAD_MIN_TILES_DW=1 if dw else OUT_OF_REACH)
    else:                        # today's thresholds; a pass off has its threshold out of reach
        if not dx:
            values["WINOGRAD_MIN_TILES"] = OUT_OF_REACH
        if not dw:
            values["WINOGRAD_MIN_TILES_DW"] = OUT_OF_REACH
    return values


@contextlib.contextmanager
def constants(values):
    """Set conv_choice constants for the block (plans are keyed by them)."""
    old = {k: getattr(conv_choice, k) for k in values}
    for k, v in values.items():
        setattr(conv_choice, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(conv_choice, k, v)


@contextlib.contextmanager
def count_kernels():
    """Yield {"dx": calls, "dw": calls, "outer": calls} during the block: of the Winograd
    backward kernels (dx runs winograd.forward on dout; a training forward never does) and
    of the outer kernel (compiled/outer.py: a training forward, dx or dw the plan gives it)."""
    counts = {"dx": 0, "dw": 0, "outer": 0}
    real = [("dx", winograd, "forward"), ("dw", winograd, "weight_grad"),
            ("outer", outer, "forward"), ("outer", outer, "weight_grad"),
            ("outer", outer, "gated_weight_grad")]
    saved = [getattr(module, name) for _, module, name in real]

    def counted(key, fn):
        def call(*args, **kw):
            counts[key] += 1
            return fn(*args, **kw)
        return call

    for (key, module, name), fn in zip(real, saved):
        setattr(module, name, counted(key, fn))
    try:
        yield counts
    finally:
        for (_, module, name), fn in zip(real, saved):
            setattr(module, name, fn)


def volnet_run(widths, seed, dtype):
    """Final parameters (float64 vector) and per-step losses of volnet's replay."""
    net, (xs, ys) = build(widths, seed, dtype), data(seed)
    opt = vn.SGD(net, lr=LR, momentum=MOMENTUM)
    losses = []
    for x, y in zip(xs, ys):
        loss, dout = vn.functional.softmax_cross_entropy(
            net.forward(x.astype(dtype), training=True), y)
        losses.append(float(loss))
        net.backward(dout, input_grad=False)
        opt.step()
    return np.concatenate([p.ravel().astype(np.float64) for _, p, _ in net.named_params()]), losses


def torch_run(widths, seed, dtype):
    """Final parameters (float64 vector) of PyTorch's replay from the same filters and data
    (``dtype`` a torch dtype; one thread)."""
    import torch
    mods = []
    for layer in build(widths, seed, np.float64):
        if isinstance(layer, vn.Conv2d):
            m = torch.nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
        elif isinstance(layer, vn.Linear):
            m = torch.nn.Linear(*reversed(layer.params["weight"].shape))
        else:
            m = {vn.ReLU: torch.nn.ReLU, vn.MaxPool2d: lambda: torch.nn.MaxPool2d(2),
                 vn.Flatten: torch.nn.Flatten}[type(layer)]()
        for key, value in layer.params.items():
            getattr(m, key).data = torch.tensor(value)
        mods.append(m)
    tnet = torch.nn.Sequential(*mods).to(dtype)
    opt = torch.optim.SGD(tnet.parameters(), lr=LR, momentum=MOMENTUM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for x, y in zip(*data(seed)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(tnet(torch.tensor(x, dtype=dtype)),
                                              torch.tensor(y)).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return np.concatenate([p.detach().double().numpy().ravel() for p in tnet.parameters()])


def rel(a, b):
    """Normwise relative difference ||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def replay(net_name, seed, settings=SETTINGS):
    """One seed of the study: {"torch": PyTorch float32's divergence, "agree": volnet float64
    against PyTorch float64, "peak": volnet float64's highest loss, setting: (divergence,
    kernel call counts: count_kernels)}."""
    import torch
    widths = WIDTHS[net_name]
    with backend.use_kernels("numba"):
        ours64, losses = volnet_run(widths, seed, np.float64)
        theirs64 = torch_run(widths, seed, torch.float64)
        theirs32 = torch_run(widths, seed, torch.float32)
        row = {"torch": rel(theirs32, theirs64), "agree": rel(ours64, theirs64),
               "peak": max(losses)}
        for setting in settings:
            with constants(settings_constants(net_name, setting)), count_kernels() as counts:
                ours32, _ = volnet_run(widths, seed, np.float32)
            row[setting] = (rel(ours32, ours64), dict(counts))
    return row


def speed(repeats):
    """Print median and best step times (ms, wall and CPU) with Winograd dx/dw off and on."""
    from benchmarks import nets
    cases = (("vgg_cifar", 128, (3, 32, 32)), ("resnet18", 16, (3, 224, 224)))
    for name, batch, shape in cases:
        net, _ = nets.build(name)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        wall, cpu = {False: [], True: []}, {False: [], True: []}
        for rep in range(repeats + 1):           # the first round warms (compiles, plans)
            for on in (False, True):
                with constants({"WINOGRAD_TRAINING": on}):
                    t0, c0 = time.perf_counter(), time.process_time()
                    nets.volnet_train_step(net, x, labels)
                    if rep:
                        wall[on].append(1e3 * (time.perf_counter() - t0))
                        cpu[on].append(1e3 * (time.process_time() - c0))
        for on in (False, True):
            print(f"{name} b{batch} dx/dw Winograd {'on ' if on else 'off'}: wall median "
                  f"{statistics.median(wall[on]):.1f} best {min(wall[on]):.1f} ms, CPU median "
                  f"{statistics.median(cpu[on]):.1f} best {min(cpu[on]):.1f} ms", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--nets", default="narrow,wide")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    if args.speed:
        speed(args.repeats)
        return
    settings = tuple(args.settings.split(","))
    for net_name in args.nets.split(","):
        rows = []
        print(f"\n{net_name} {WIDTHS[net_name]}: divergence from float64 (ratio to torch f32)")
        print("seed  peak   torch32   " + "  ".join(f"{s:>18}" for s in settings)
              + "  winograd calls dx/dw")
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.perf_counter()
            row = replay(net_name, seed, settings)
            rows.append(row)
            cells = "  ".join(f"{row[s][0]:.2e} ({row[s][0] / row['torch']:5.2f}x)"
                              for s in settings)
            calls = " ".join(f"{row[s][1]['dx']}/{row[s][1]['dw']}" for s in settings)
            print(f"{seed:4d} {row['peak']:5.1f}  {row['torch']:.2e}  {cells}  {calls}"
                  f"  ({time.perf_counter() - t0:.0f} s, f64 agree {row['agree']:.0e})",
                  flush=True)
        for s in settings:
            ratios = [r[s][0] / r["torch"] for r in rows]
            print(f"{net_name} {s:5s}: ratio median {statistics.median(ratios):.2f}, "
                  f"worst {max(ratios):.2f}")


if __name__ == "__main__":
    main()
