"""``volnet generate CHECKPOINT``: draw digits from a trained DCGAN or VAE, or reconstruct."""

from __future__ import annotations

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


def _check_sizes(args, net) -> None:
    """Refuse an --n whose images (and the grid, PNG and array written from them) would not
    fit the memory budget, before anything is allocated."""
    from volnet.limits import check_budget
    from volnet.tools.summary import summary
    from volnet.train.generative import LATENT, kind_of
    from volnet.train.sampling import GENERATE_BATCH

    kind = kind_of(net)
    image = 28 * 28
    # per digit: its code, the float images (and their float32 copy for --npy), the uint8
    # pixels, the grid and the PNG; measured with tracemalloc: 9.0 kB per digit with --npy
    per_digit = 4 * LATENT[kind] + 4 * image * (2 if args.npy else 1) + 3 * image + 240
    decoder = net.generator if kind == "dcgan" else net.decoder
    activations = summary(decoder, (LATENT[kind], 1, 1)).totals["activations"]
    batch = min(args.n, GENERATE_BATCH)
    check_budget(args.n * per_digit + 2 * 4 * activations * batch,
                 f"volnet generate --n {args.n:,}", error=ConfigError)


def run(args) -> int:
    import io

    from volnet.commands.outputs import OutputPlan
    from volnet.data.registry import load_dataset
    from volnet.io.checkpoint import load
    from volnet.train.images import grid, png_bytes
    from volnet.train.sampling import generate, reconstruct

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    if not 0 <= args.seed < 2 ** 63:
        raise ConfigError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")
    plan = OutputPlan(overwrite=args.overwrite)
    out = plan.add("--out", args.out)
    npy = plan.add("--npy", args.npy, suffix=".npy")   # np.save's name for a path without it
    net = load(args.checkpoint)
    _check_sizes(args, net)
    if args.reconstruct:
        x = load_dataset(args.data).x_test[:args.n].astype(np.float32) / 255.0
        images = reconstruct(net, x)
        cols = 8
        rows = []
        for i in range(0, len(x), cols):   # a row of originals above a row of reconstructions
            rows += [x[i:i + cols], images[i:i + cols]]
        shown = np.concatenate([np.pad(r, ((0, cols - len(r)), (0, 0), (0, 0), (0, 0))) for r in rows])
        plan.stage(out, png_bytes(grid(shown, cols=cols)))
    else:
        images = generate(net, args.n, seed=args.seed)
        plan.stage(out, png_bytes(grid(images)))
    if npy:
        buffer = io.BytesIO()
        np.save(buffer, images.astype(np.float32, copy=False), allow_pickle=False)
        plan.stage(npy, buffer.getvalue())
    plan.commit()   # both files or neither
    print(f"wrote {len(images)} {'reconstructions' if args.reconstruct else 'digits'} to {out}"
          + (f" and {npy}" if npy else ""))
    return 0
