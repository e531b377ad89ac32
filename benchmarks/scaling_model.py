"""Where data-parallel scaling stops: an alpha-beta model of the ring allreduce, fitted to the
simulated cluster's measurements, run against each layer's measured backward time.

Ingredients:

* **The link** (``benchmarks/cluster.json``, from ``python -m benchmarks.cluster --probe``):
  bare allreduces of 4 kB to 16 MB on 2 and 4 ranks at 1 and 10 Gbit/s. A ring
  allreduce of n bytes over W ranks takes ``2 (W-1) alpha + 2 (W-1)/W n beta``: 2(W-1)
  steps, each a message of n/W bytes. Least squares over every probe of one link speed
  gives alpha (the per-message software and queueing latency) and beta (seconds per
  byte), from the smallest message and those of 4 MB and more (the shaper passes a
  millisecond's burst unshaped); ``beta`` at speed L is then written as
  ``8 / (eta L)``, eta the fraction of the line rate the ring achieves. Predictions
  at 10 and 25 Gbit/s use the alpha fitted at 10 Gbit/s and the eta of the 1 Gbit/s
  fit (at 1 Gbit/s the link, not this machine's two cores pushing TCP through veths, is
  the bottleneck, so its eta is the network's).
* **The compute** (measured here, one process, one thread): forward time, and for each
  layer with parameters the moment its gradients are ready during backward, plus their
  bytes, for ResNet-18 and ResNet-50 at a reduced input (``--input``, ``--batch``).
* **The schedule**, as ``GradientAllreducer`` runs it: gradients fill 25 MB buckets in the
  order they become ready; a bucket's allreduce starts when it is full and the previous
  one has finished (one ring at a time); the step ends when backward and the last
  allreduce are both done. Without overlap every bucket starts after backward.

Efficiency at N nodes = step time of 1 node / step time of N nodes (weak scaling: the
per-node batch stays fixed, as in Horovod's and Goyal et al.'s figures). Two compute
speeds are modelled: this CPU as measured, and a GPU-class node whose step is
``--gpu-step`` times shorter with the same per-layer proportions (default: ResNet-50 at
32 images per step in 0.16 s, a P100 at about 200 images/s).

Usage:
    python -m benchmarks.scaling_model                    # print the tables
    python -m benchmarks.scaling_model --readme README.md # rewrite the README's tables
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

if __name__ == "__main__":   # not when imported (a test process keeps its threads)
    # one thread, as each rank of the cluster runs; set before NumPy loads its BLAS
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_JSON = os.path.join(HERE, "cluster.json")
NODES = (8, 16, 64)
LINKS = (10.0, 25.0)
BUCKET_BYTES = 25 * 2 ** 20
# a P100-class GPU at 224 x 224, 32 images per GPU: ResNet-50 at about 200 images/s (fp32)
GPU_STEP_S = {"resnet50": 32 / 200}
# published weak-scaling efficiencies, for the comparison under the table
PUBLISHED = [
    ("Goyal et al. 2017 (arXiv:1706.02677)", "ResNet-50, 8 to 256 P100 GPUs (32 servers of 8, "
     "50 Gbit/s Ethernet), 32 images per GPU", "about 90%"),
    ("Sergeev & Del Balso 2018 (Horovod, arXiv:1802.05799)", "Inception V3 and ResNet-101, 128 "
     "Pascal GPUs, 25 Gbit/s Ethernet (TCP)", "about 88-90%; VGG-16 (138 M parameters) 68%"),
]


# ---- the link: alpha-beta fit -------------------------------------------------------------------

def fit_alpha_beta(probes: list[dict], gbit: float) -> dict:
    """Least-squares alpha (s) and beta (s/byte) of the ring model for one link speed.

    Uses the smallest message (alpha's) and those of 4 MB and more: the token bucket
    lets a millisecond of traffic (125 kB at 1 Gbit/s, 1.25 MB at 10) through at the
    veth's own speed, so mid-sized messages would make the link look faster than it is.
    """
    rows, times = [], []
    for probe in probes:
        if probe["gbit"] != gbit:
            continue
        w = probe["ranks"]
        smallest = min(r["bytes"] for r in probe["probe"])
        for r in probe["probe"]:
            if r["bytes"] != smallest and r["bytes"] < 4 * 2 ** 20:
                continue
            rows.append([2 * (w - 1), 2 * (w - 1) / w * r["bytes"]])
            times.append(r["seconds"])
    if len(rows) < 2:
        raise SystemExit(f"benchmarks.scaling_model: no probes at {gbit:g} Gbit/s in the "
                         "cluster measurements; run python -m benchmarks.cluster --probe")
    a, t = np.array(rows), np.array(times)
    # relative error is what matters across 4 kB .. 16 MB: weight each probe by 1/t
    w = a / t[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(w, np.ones_like(t), rcond=None)
    if alpha < 0:   # latency cannot be negative: the best fit with alpha = 0
        alpha, beta = 0.0, float(w[:, 1] @ np.ones_like(t) / (w[:, 1] @ w[:, 1]))
    eta = 8 / (beta * gbit * 1e9)
    predicted = a @ np.array([alpha, beta])
    return {"gbit": gbit, "alpha_s": float(alpha), "beta_s_per_byte": float(beta),
            "eta": float(eta), "max_rel_err": float(np.max(np.abs(predicted / t - 1))),
            "points": len(t)}


def ring_seconds(nbytes: float, nodes: int, alpha: float, gbit: float, eta: float) -> float:
    """Ring allreduce time of ``nbytes`` over ``nodes`` at ``gbit`` with efficiency ``eta``."""
    if nodes == 1:
        return 0.0
    return 2 * (nodes - 1) * alpha + 2 * (nodes - 1) / nodes * nbytes * 8 / (eta * gbit * 1e9)


# ---- the compute: per-layer profile ------------------------------------------------------------

def profile(model: str, size: int, batch: int, repeats: int = 3) -> dict:
    """Forward time, and per layer with parameters (in backward order) when its gradients
    are ready after the start of backward and how many bytes they hold; medians."""
    import volnet as vn
    from volnet.layers import hooks
    from volnet.models.registry import build

    net = build(model, num_classes=1000)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, size=batch)
    runs = []
    for i in range(repeats + 1):
        marks = []
        t0 = time.perf_counter()
        scores = net.forward(x, training=True)
        _, dscores = vn.softmax_cross_entropy(scores, y)
        t1 = time.perf_counter()

        def ready(layer, dout, dx, marks=marks):
            if layer.params:
                marks.append((time.perf_counter(), sum(g.nbytes for k, g in layer.grads.items()
                                                       if k not in layer.frozen)))

        with hooks.register_backward_hook(ready):
            net.backward(dscores, input_grad=False)
        t2 = time.perf_counter()
        if i:   # the first run compiles and allocates
            runs.append((t1 - t0, t2 - t1, [(t - t1, b) for t, b in marks]))
    forward = float(np.median([r[0] for r in runs]))
    backward = float(np.median([r[1] for r in runs]))
    ready_at = np.median(np.array([[t for t, _ in r[2]] for r in runs]), axis=0)
    nbytes = [b for _, b in runs[0][2]]
    return {"model": model, "input": size, "batch": batch, "forward_s": forward,
            "backward_s": backward, "ready_s": [float(t) for t in ready_at], "bytes": nbytes,
            "gradient_bytes": int(sum(nbytes)), "threads": 1}


# ---- the schedule --------------------------------------------------------------------------

def step_seconds(prof: dict, nodes: int, link: dict, gbit: float, scale: float = 1.0,
                 overlap: bool = True) -> tuple[float, float]:
    """(step time, time waiting for communication after backward) at ``nodes`` nodes.

    ``scale`` multiplies every compute time (a faster node: scale < 1).
    """
    forward, backward = prof["forward_s"] * scale, prof["backward_s"] * scale
    buckets, size, last = [], 0, 0.0
    for ready, nbytes in zip(prof["ready_s"], prof["bytes"]):
        if size and size + nbytes > BUCKET_BYTES:
            buckets.append((last, size))
            size = 0
        size, last = size + nbytes, ready * scale
    if size:
        buckets.append((last, size))
    free = 0.0
    for ready, nbytes in buckets:
        start = max(ready if overlap else backward, free)
        free = start + ring_seconds(nbytes, nodes, link["alpha_s"], gbit, link["eta"])
    end = max(backward, free)
    return forward + end, end - backward


def predictions(profiles: dict, link: dict, gpu_scale: dict) -> list[dict]:
    rows = []
    for model, prof in profiles.items():
        for basis, scale in (("this CPU", 1.0), ("GPU-class", gpu_scale[model])):
            compute = (prof["forward_s"] + prof["backward_s"]) * scale
            for gbit in LINKS:
                row = {"model": model, "basis": basis, "gbit": gbit, "compute_s": compute}
                for nodes in NODES:
                    t, wait = step_seconds(prof, nodes, link, gbit, scale)
                    t_off, _ = step_seconds(prof, nodes, link, gbit, scale, overlap=False)
                    row[nodes] = {"efficiency": compute / t, "no_overlap": compute / t_off,
                                  "wait_s": wait}
                rows.append(row)
    return rows


def validate(result: dict, links: dict[float, dict], prof: dict) -> list[dict]:
    """The model against the cluster's own ResNet-18 runs: predicted and measured waiting.

    Each run's compute is taken from the run itself (its no-overlap step minus its
    waiting: ranks sharing two cores compute slower than one alone), spread over the
    layers as ``prof`` measured; the link is that run's, as fitted.
    """
    from benchmarks.cluster import summarise

    rows = []
    for r in summarise(result):
        if r["model"] != "resnet18" or r["ranks"] == 1 or r["off_step_ms"] is None:
            continue
        link = links[r["gbit"]]
        compute = (r["off_step_ms"] - r["off_wait_ms"]) / 1e3
        scale = compute / (prof["forward_s"] + prof["backward_s"])
        on = step_seconds(prof, r["ranks"], link, r["gbit"], scale)[1]
        off = step_seconds(prof, r["ranks"], link, r["gbit"], scale, overlap=False)[1]
        rows.append({"ranks": r["ranks"], "gbit": r["gbit"], "wait_on_ms": r["wait_ms"],
                     "wait_off_ms": r["off_wait_ms"], "model_on_ms": 1e3 * on,
                     "model_off_ms": 1e3 * off})
    return rows


# ---- tables -------------------------------------------------------------------------------------

def cluster_table(result: dict) -> str:
    from benchmarks.cluster import summarise, table

    c = result["conditions"]
    return (table(summarise(result)) + "\n\n"
            f"Conditions: {c['cores']} cores shared by up to 4 ranks (one BLAS thread each) and "
            f"by other users (load average {c['loadavg_at_end'][0]:g} at the end), best of "
            f"{c['repeat']} interleaved runs of {c['steps']} timed steps after {c['warmup']} "
            f"warm-up steps, {c['date']}. Inputs: cifar_example 32x32, 32 images per rank; "
            "resnet18 64x64, 16 images per rank.")


def model_table(rows: list[dict], links: dict[float, dict], profiles: dict) -> str:
    lines = ["| model | node compute | link | " + " | ".join(f"{n} nodes" for n in NODES)
             + " |", "|---|---|---:|" + "---:|" * len(NODES)]
    for r in rows:
        cells = " | ".join(f"{100 * r[n]['efficiency']:.0f}% ({100 * r[n]['no_overlap']:.0f}%)"
                           for n in NODES)
        lines.append(f"| {r['model']} | {r['basis']}, {1e3 * r['compute_s']:.0f} ms | "
                     f"{r['gbit']:g} Gbit/s | {cells} |")
    l1, l10 = links[1.0], links[10.0]
    fits = (f"Fitted ring (4 kB to 16 MB, 2 and 4 ranks): at 1 Gbit/s alpha "
            f"{1e6 * l1['alpha_s']:.0f} us, eta {l1['eta']:.2f} of the line rate (largest "
            f"error {100 * l1['max_rel_err']:.0f}%); at 10 Gbit/s alpha "
            f"{1e6 * l10['alpha_s']:.0f} us, eta {l10['eta']:.2f} (largest error "
            f"{100 * l10['max_rel_err']:.0f}%).")
    prof = "; ".join(f"{m} {p['input']}x{p['input']}, batch {p['batch']}: forward "
                     f"{1e3 * p['forward_s']:.0f} ms, backward {1e3 * p['backward_s']:.0f} ms, "
                     f"{p['gradient_bytes'] / 1e6:.0f} MB of gradients"
                     for m, p in profiles.items())
    return "\n".join(lines) + f"\n\n{fits} Compute measured here ({prof}; one thread)."


def validation_table(rows: list[dict]) -> str:
    lines = ["| ResNet-18 run | waiting, overlap: measured | model | waiting, no overlap: "
             "measured | model |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['ranks']} ranks, {r['gbit']:g} Gbit/s | {r['wait_on_ms']:.0f} ms | "
                     f"{r['model_on_ms']:.0f} ms | {r['wait_off_ms']:.0f} ms | "
                     f"{r['model_off_ms']:.0f} ms |")
    return "\n".join(lines)


def _replace(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"benchmarks.scaling_model: the README has no {begin} ... {end} block")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling_model",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--cluster", default=CLUSTER_JSON,
                        help="measurements of python -m benchmarks.cluster --probe --json")
    parser.add_argument("--input", type=int, default=64, help="image side for the profile")
    parser.add_argument("--batch", type=int, default=8, help="images per node per step")
    parser.add_argument("--gpu-step", type=float, default=GPU_STEP_S["resnet50"],
                        help="seconds of a GPU-class node's ResNet-50 step (forward+backward)")
    parser.add_argument("--readme", default=None, help="rewrite this README's tables")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    with open(args.cluster) as f:
        result = json.load(f)
    links = {g: fit_alpha_beta(result["probes"], g) for g in (1.0, 10.0)}
    # software latency from the fast link, network efficiency from the link-bound one
    link = {"alpha_s": links[10.0]["alpha_s"], "eta": links[1.0]["eta"]}
    profiles = {m: profile(m, args.input, args.batch) for m in ("resnet18", "resnet50")}
    r50 = profiles["resnet50"]
    gpu = {"resnet50": args.gpu_step / (r50["forward_s"] + r50["backward_s"])}
    gpu["resnet18"] = gpu["resnet50"]   # same device: the per-layer times shrink alike
    rows = predictions(profiles, link, gpu)
    checked = validate(result, links, profile("resnet18", 64, 16))   # the cluster's runs
    model = model_table(rows, links, profiles) + "\n\n" + validation_table(checked)
    cluster = cluster_table(result)
    print(cluster + "\n\n" + model)
    if args.readme:
        with open(args.readme) as f:
            text = f.read()
        text = _replace(_replace(text, "cluster-table", cluster), "scaling-model", model)
        with open(args.readme, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
