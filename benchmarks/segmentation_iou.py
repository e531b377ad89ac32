"""Held-out mean IoU of the dilated front-end with and without the context module, and the FCN.

    python benchmarks/segmentation_iou.py [--seeds 0 1 2] [--out DIR] [--json runs.jsonl]
        [--threads 1]

Per seed: ``volnet train dilated`` (8 epochs, Adam 3e-3 cosine to 0, batch 16) on the 2,000
training scenes; then, from that front-end, ``dilated-context`` (the context module added,
the whole net 4 epochs at 1e-3: ``volnet train dilated-context`` stage 2) and, as the
control with the same extra training, ``dilated`` for the same 4 epochs at 1e-3; and
``fcn`` (8 epochs) with the first seed. Each is scored on the 500 held-out scenes (drawn
from the 1,000 held-out digits). Prints one line per run and, per row, the mean and the
sample standard deviation over seeds, with the training time (wall clock of
``Trainer.fit``, per-epoch validation included; the context and control rows add their
front-end's time). Not a test: about 40 minutes on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from volnet.runtime.openblas import set_blas_threads
from volnet.runtime.thread_policy import pin_threads
from volnet.train.segmentation import CONTEXT_STAGE, train_segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="segmentation-runs", help="folder for checkpoints")
    parser.add_argument("--json", default=None, help="append one JSON line per run here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_blas_threads(args.threads)
    pin_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    rows = []

    def run(tag, model, seed, epochs=None, lr=None, init=None):
        result = train_segmenter(model, epochs=epochs, lr=lr, seed=seed, init=init,
                                 progress=False, overwrite=True, log=lambda *a: None,
                                 out=os.path.join(args.out, f"{tag}-{seed}.safetensors"))
        row = {"tag": tag, "model": model, "seed": seed, "mean_iou": result.mean_iou,
               "pixel_accuracy": result.pixel_accuracy, "class_iou": result.class_iou,
               "seconds": result.seconds}
        rows.append(row)
        print(f"{tag:16s} seed {seed}: mean IoU {result.mean_iou:.4f}, pixel accuracy "
              f"{result.pixel_accuracy:.4f}, {result.seconds:.0f} s", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        return result

    for seed in args.seeds:
        front = run("front-end", "dilated", seed).path
        run("context", "dilated-context", seed, init=front, **CONTEXT_STAGE)
        run("control", "dilated", seed, init=front, **CONTEXT_STAGE)
    run("fcn", "fcn", args.seeds[0])
    base = {r["seed"]: r["seconds"] for r in rows if r["tag"] == "front-end"}
    for tag in ("front-end", "control", "context", "fcn"):
        mine = [r for r in rows if r["tag"] == tag]
        ious = np.array([r["mean_iou"] for r in mine])
        secs = [r["seconds"] + (base[r["seed"]] if tag in ("context", "control") else 0)
                for r in mine]
        spread = f" +- {ious.std(ddof=1):.4f} (sd, {len(ious)} seeds)" if len(ious) > 1 else ""
        print(f"{tag:16s} mean IoU {ious.mean():.4f}{spread}; "
              f"{min(secs):.0f}-{max(secs):.0f} s per run in all")

if __name__ == "__main__":
    main()
