"""Winograd float32 accuracy on every 3x3 layer shape of the zoo (benchmarks/README.md table).

For each distinct 3x3 conv of vgg16, resnet18/50, googlenet and inception_v3 (one image
at the model's input size, shapes recorded from a forward pass), the normwise relative
error max|y - y64| / max|y64| of forward, dx and dw against float64 direct convolution
(im2col in float64; N(0, 1) inputs and output gradients, He-normal filters), for
F(4x4,3x3) and float32 im2col (F(2x2)'s column, 1.1e-6 worst, is in the fifth
round's table; F(2x2) was removed in the sixth). Run: python -m benchmarks.winograd_error
"""

from __future__ import annotations

import numpy as np

from volnet.functional import conv as conv_mod
from volnet.functional import conv_gemm
from volnet.functional.compiled import winograd
from volnet.layers import conv as conv_layer
from volnet.models import INPUT_SHAPES, build

MODELS = ("vgg16", "resnet18", "resnet50", "googlenet", "inception_v3")


def zoo_shapes():
    """{(C, H, W, F, padding, dilation): [model names]} of every 3x3 stride-1 conv."""
    shapes = {}
    real = conv_layer.conv2d_forward
    for name in MODELS:
        def spy(x, w, b, stride, padding, dilation, groups, keep_cache=True, _name=name):
            if w.shape[2:] == (3, 3) and tuple(stride) == (1, 1) and groups == 1:
                key = (x.shape[1], *x.shape[2:], w.shape[0], padding[0], dilation[0])
                shapes.setdefault(key, []).append(_name)
            return real(x, w, b, stride, padding, dilation, groups, keep_cache)
        conv_layer.conv2d_forward = spy
        try:
            model = build(name)
            model.forward(np.zeros((1, *INPUT_SHAPES[name]), np.float32), cache=False)
        finally:
            conv_layer.conv2d_forward = real
    return shapes


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def errors(c, h, w, f, p, d, seed=0):
    """{kernel: (forward, dx, dw) relative errors} for one layer shape, batch 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, w))
    wt = rng.standard_normal((f, c, 3, 3)) * np.sqrt(2.0 / (9 * c))
    ho, wo = (conv_mod.conv_output_size(s, 3, 1, p, d) for s in (h, w))
    dout = rng.standard_normal((1, f, ho, wo))
    full = (2 * d - p,) * 2
    wf = conv_gemm.flipped_transpose(wt, 1)
    ref = (conv_gemm.forward(x, wt, (1, 1), (p, p), (d, d), 1, (ho, wo))[0],
           conv_gemm.forward(dout, wf, (1, 1), full, (d, d), 1, (h, w))[0],
           conv_gemm.weight_grad(x, dout, wt.shape, (1, 1), (p, p), (d, d), 1))
    x32, w32, d32, wf32 = (a.astype(np.float32) for a in (x, wt, dout, wf))
    out = {"im2col f32": (conv_gemm.forward(x32, w32, (1, 1), (p, p), (d, d), 1, (ho, wo))[0],
                          conv_gemm.forward(d32, wf32, (1, 1), full, (d, d), 1, (h, w))[0],
                          conv_gemm.weight_grad(x32, d32, wt.shape, (1, 1), (p, p), (d, d), 1))}
    out["winograd4"] = (winograd.forward(x32, w32, None, (p, p), (d, d), (ho, wo)),
                        winograd.forward(d32, wf32, None, full, (d, d), (h, w)),
                        winograd.weight_grad(x32, d32, (p, p), (d, d)))
    return {k: tuple(_rel(g, r) for g, r in zip(v, ref)) for k, v in out.items()}


def main():
    shapes = zoo_shapes()
    print("| layer (C, HxW, F, pad, dil) | models | F(4x4) fwd / dx / dw "
          "| im2col f32 fwd / dx / dw |")
    print("|---|---|---|---|")
    worst = {}
    for (c, h, w, f, p, d), names in sorted(shapes.items()):
        errs = errors(c, h, w, f, p, d)
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), *v)
        cells = [" / ".join(f"{e:.1e}" for e in errs[k]) for k in ("winograd4", "im2col f32")]
        models = ", ".join(sorted(set(names)))
        print(f"| {c}, {h}x{w}, {f}, {p}, {d} | {models} | " + " | ".join(cells) + " |",
              flush=True)
    print("worst: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
