"""``volnet generate CHECKPOINT``: draw digits from a trained DCGAN or VAE, or reconstruct."""

from __future__ import annotations

import os

import numpy as np

from volnet.errors import ConfigError


def add_parser(sub):
    p = sub.add_parser("generate", help="draw digits from a DCGAN/VAE checkpoint",
                       description="Draw N digits from a checkpoint of `volnet train dcgan` or "
                                   "`volnet train vae` as a PNG grid (and an (N, 1, 28, 28) float "
                                   "array in [0, 1]); with --reconstruct, a VAE's reconstructions "
                                   "of held-out digits.")
    p.add_argument("checkpoint")
    p.add_argument("--n", type=int, default=64, help="how many digits (default 64)")
    p.add_argument("--out", required=True, help="PNG grid to write")
    p.add_argument("--npy", default=None, help="also save the images as a .npy array")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--reconstruct", action="store_true",
                   help="VAE only: rows of held-out digits (odd rows) and their reconstructions "
                        "(even rows); --npy then saves the reconstructions")
    p.add_argument("--data", default="mnist-sample", help="dataset whose held-out digits "
                   "--reconstruct uses (default: the bundled MNIST sample)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing --out / --npy")
    return p


def run(args) -> int:
    from volnet.data.registry import load_dataset
    from volnet.io.checkpoint import load
    from volnet.train.images import grid, write_png
    from volnet.train.sampling import generate, reconstruct

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    for path in (args.out, args.npy):
        if path and os.path.exists(path) and not args.overwrite:
            raise ConfigError(f"{path} exists; choose another path or pass --overwrite")
    net = load(args.checkpoint)
    if args.reconstruct:
        x = load_dataset(args.data).x_test[:args.n].astype(np.float32) / 255.0
        images = reconstruct(net, x)
        cols = 8
        rows = []
        for i in range(0, len(x), cols):   # a row of originals above a row of reconstructions
            rows += [x[i:i + cols], images[i:i + cols]]
        shown = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0), (0, 0))) for r in rows])
        write_png(args.out, grid(shown, cols=cols))
    else:
        images = generate(net, args.n, seed=args.seed)
        write_png(args.out, grid(images))
    if args.npy:
        np.save(args.npy, images.astype(np.float32), allow_pickle=False)
    print(f"wrote {len(images)} {'reconstructions' if args.reconstruct else 'digits'} to {args.out}"
          + (f" and {args.npy}" if args.npy else ""))
    return 0
