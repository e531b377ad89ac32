"""Held-out mean IoU of the dilated front-end with and without the context module, and the FCN.

    python benchmarks/segmentation_iou.py [--epochs 8] [--seeds 0 1 2] [--out DIR]
        [--json results.jsonl] [--threads 1]

Trains ``volnet train dilated`` and ``dilated-context`` once per seed and ``fcn`` with the
first seed, all with the default recipe (Adam 3e-3, cosine to 0, batch 16) on the 2,000
training scenes, and scores each on the 500 held-out scenes (drawn from the 1,000 held-out
digits). Prints one line per run and, per model, the mean and the sample standard
deviation of the mean IoU over seeds, with the training time of each run (wall clock of
``Trainer.fit``, validation after every epoch included). Not a test: about half an hour of
CPU on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from volnet.train.segmentation import DEFAULTS, train_segmenter
from volnet.train.threads import pin_threads, set_blas_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="segmentation-runs", help="folder for checkpoints")
    parser.add_argument("--json", default=None, help="append one JSON line per run here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_blas_threads(args.threads)
    pin_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    runs = [(m, s) for m in ("dilated", "dilated-context") for s in args.seeds]
    runs.append(("fcn", args.seeds[0]))
    rows = []
    for model, seed in runs:
        result = train_segmenter(model, epochs=args.epochs, seed=seed, progress=False,
                                 out=os.path.join(args.out, f"{model}-{seed}.safetensors"),
                                 overwrite=True, log=lambda *a: None)
        row = {"model": model, "seed": seed, "epochs": args.epochs, "mean_iou": result.mean_iou,
               "pixel_accuracy": result.pixel_accuracy, "class_iou": result.class_iou,
               "seconds": result.seconds}
        rows.append(row)
        print(f"{model:16s} seed {seed}: mean IoU {result.mean_iou:.4f}, pixel accuracy "
              f"{result.pixel_accuracy:.4f}, {result.seconds:.0f} s", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    for model in ("dilated", "dilated-context", "fcn"):
        ious = np.array([r["mean_iou"] for r in rows if r["model"] == model])
        secs = [r["seconds"] for r in rows if r["model"] == model]
        spread = f" +- {ious.std(ddof=1):.4f} (sd, {len(ious)} seeds)" if len(ious) > 1 else ""
        print(f"{model:16s} mean IoU {ious.mean():.4f}{spread}; "
              f"{min(secs):.0f}-{max(secs):.0f} s per run")


if __name__ == "__main__":
    main()
