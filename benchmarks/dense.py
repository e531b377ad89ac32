"""Dense (FC->CONV) evaluation vs crop-by-crop: ``python -m benchmarks.dense``.

VGG-16's spatial structure (13 CONV, 5 POOL, stride 32, 224x224 crops) at a
fraction of its width (``--width-divisor``, default 8; 1 is the real VGG-16),
on one 384x384 image:

* stride 32: one pass of the converted net vs the original net on 6x6 = 36 crops;
* stride 16: shift-and-stitch (4 passes) vs 11x11 = 121 crops.

Crops go through the original network ``--batch`` at a time. Prints median
seconds of interleaved repeats and the ratio crop-by-crop / dense, next to the
ratio of input pixels the two read (what the CONV work scales with), and how far
the dense scores are from the crop scores (VGG zero-pads, so they differ: see
``volnet.tools.dense``). Thread counts are pinned before NumPy loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dense", description=__doc__.split("\n")[0])
    parser.add_argument("--width-divisor", type=int, default=8,
                        help="divide VGG-16's widths (64..512, 4096) by this; 1 = real VGG-16")
    parser.add_argument("--size", type=int, default=384, help="image height and width (384)")
    parser.add_argument("--strides", default="32,16", help="comma-separated strides (32,16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per side (3)")
    parser.add_argument("--batch", type=int, default=8, help="crops per forward, crop-by-crop (8)")
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (2)")
    return parser.parse_args(argv)


def _median_interleaved(first, second, repeats: int):
    """Alternate the two sides so load drift on a shared machine hits both alike.

    Returns the median seconds of each side and each side's last result.
    """
    times, results = ([], []), [None, None]
    for r in range(repeats):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            start = time.perf_counter()
            results[side] = (first, second)[side]()
            times[side].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), results


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)   # before NumPy loads its BLAS
    import numpy as np

    from volnet.models.vgg import VGG_CONFIGS, vgg
    from volnet.tools.dense import crop_scores, dense_scores
    from volnet.tools.fully_conv import to_fully_conv

    d = args.width_divisor
    config = [c if c == "M" else max(1, c // d) for c in VGG_CONFIGS["vgg16"]]
    net = vgg(config, hidden_features=max(1, 4096 // d))
    fc = to_fully_conv(net, (3, 224, 224))
    image = np.random.default_rng(0).standard_normal((3, args.size, args.size)).astype(np.float32)
    print(f"VGG-16 layout, widths / {d} ({net.num_params():,} parameters), image {args.size}x"
          f"{args.size}, crops 224x224, {args.threads} threads, median of {args.repeats}")
    print(f"{'stride':>6} {'map':>7} {'passes':>6} {'crops':>6} {'dense s':>9} {'crops s':>9} "
          f"{'ratio':>7} {'pixel ratio':>11} {'max |dense-crop| / max |crop|':>30}")
    for stride in (int(s) for s in args.strides.split(",")):
        side = (args.size - 224) // stride + 1
        starts = [i * stride for i in range(side)]
        extents = {}   # per shift: rows covered by its pass (to the far edge of its last crop)
        for start in starts:
            extents[start % 32] = max(extents.get(start % 32, 0), start - start % 32 + 224)
        passes = len(extents) ** 2
        pixels = sum(extents.values()) ** 2   # input pixels the dense passes read
        dense = partial(dense_scores, fc, image, stride)
        crops = partial(crop_scores, net, image, stride, (3, 224, 224), batch_size=args.batch)
        t_dense, t_crops, (by_dense, by_crops) = _median_interleaved(dense, crops, args.repeats)
        gap = np.abs(by_dense - by_crops).max() / np.abs(by_crops).max()
        print(f"{stride:>6} {side:>3}x{side:<3} {passes:>6} {side * side:>6} {t_dense:>9.3f} "
              f"{t_crops:>9.3f} {t_crops / t_dense:>6.1f}x {side * side * 224 * 224 / pixels:>10.1f}x "
              f"{gap:>30.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
