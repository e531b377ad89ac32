"""Quality of the DCGAN and the VAE, judged by a LeNet trained with `volnet train lenet5`.

    python benchmarks/generative_quality.py --lenet lenet.safetensors \\
        --dcgan dcgan.safetensors --vae vae.safetensors [--n 1000] [--json out.json]

For each generator: LeNet labels N generated digits; reported are the share of each class
(a GAN that collapses onto a few digits fails "every class >= 5%") and the mean top
softmax probability (blurry or malformed digits get low confidence; target >= 0.9).
For the VAE also: the negative ELBO in nats per digit on the first N held-out digits of
the bundled sample (one posterior sample per digit; pixel intensities in [0, 1] as
Bernoulli means), and LeNet's accuracy on the VAE's reconstructions of those digits
against their true labels (target >= 90%), next to its accuracy on the originals.
Not a test: it runs trained checkpoints, which take minutes to make.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import volnet as vn
from volnet.data.batches import BatchIterator
from volnet.data.registry import load_dataset
from volnet.train.sampling import generate, negative_elbo, reconstruct


def lenet_probabilities(lenet, images01: np.ndarray) -> np.ndarray:
    prep = lenet.preprocessing
    x = BatchIterator(images01, np.zeros(len(images01), np.int64), mean=prep.get("mean"),
                      std=prep.get("std")).transform(images01.astype(np.float32))
    return lenet.predict(x)


def judge(lenet, images01: np.ndarray) -> dict:
    probs = lenet_probabilities(lenet, images01)
    labels = probs.argmax(axis=1)
    shares = np.bincount(labels, minlength=10) / len(labels)
    return {"class_shares": [round(float(s), 4) for s in shares],
            "min_class_share": float(shares.min()),
            "mean_top_probability": float(probs.max(axis=1).mean())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lenet", required=True)
    p.add_argument("--dcgan")
    p.add_argument("--vae")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    lenet = vn.load(args.lenet)
    report = {}
    for kind, path in (("dcgan", args.dcgan), ("vae", args.vae)):
        if path:
            report[kind] = judge(lenet, generate(vn.load(path), args.n, seed=args.seed))
    if args.vae:
        vae = vn.load(args.vae)
        data = load_dataset("mnist-sample")
        x = data.x_test[:args.n].astype(np.float32) / 255.0
        y = data.y_test[:args.n]
        report["vae"].update(negative_elbo(vae, x, seed=args.seed))
        rec = lenet_probabilities(lenet, reconstruct(vae, x)).argmax(axis=1)
        orig = lenet_probabilities(lenet, x).argmax(axis=1)
        report["vae"]["lenet_accuracy_on_reconstructions"] = float((rec == y).mean())
        report["vae"]["lenet_accuracy_on_originals"] = float((orig == y).mean())
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
