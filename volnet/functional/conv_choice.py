"""Which convolution kernels run for a layer, chosen by its shape (see benchmarks/README.md):
the conv plan, decided once per (shapes, hyperparameters, dtype, kernel choice) for the
forward pass, dx and dw together (:func:`plan`) and reused by every later call.

* ``"winograd4"``: Winograd F(4x4,3x3) for float32 3x3 stride-1 convolutions (dilated ones on their sub-grids) whose output maps are large
  enough that whole tiles dominate, and with enough channels for the per-point
  products to run near BLAS speed (``volnet/functional/compiled/winograd.py``).
* ``"depthwise"``: the direct compiled kernel for float32 depthwise layers
  (groups == in == out channels; ``compiled/depthwise.py``).
* ``"direct"``: the direct float32 kernel (``compiled/direct.py``): sums over taps in
  registers, no unrolled columns, any stride, padding, dilation and groups; chosen for
  layers of at most ``DIRECT_MAX_TAPS`` taps per output (C/G * KH * KW), where BLAS's
  products are thin and im2col's unrolling costs as much as they do, and in place of a
  Winograd forward in training (it is exact: im2col's error class). Winograd keeps
  inference where both fit and both C and F are at least ``DIRECT_WINOGRAD_CHANNELS``.
  dw has its own kernel of the same kind, chosen by the same rule up to
  ``DIRECT_MAX_TAPS_DW`` taps; a strided layer's dx runs it by phases (one stride-1
  correlation per phase of the input) up to ``DIRECT_MAX_TAPS_DX`` filter taps per phase,
  whatever its forward runs ("direct (phases)"; col2im beyond).
* ``"outer"``: the outer-product float32 kernel (``compiled/outer.py``): filters in the
  vector lanes, six output positions broadcast, the weights read in place (no derived copy
  to keep or check); any stride, padding, dilation and groups. Chosen for inference
  forwards of layers with at least ``OUTER_MIN_CHANNELS`` input channels or
  ``OUTER_MIN_FILTERS`` filters per group and a kernel larger than 1x1, where Winograd does
  not fit, or the batch is smaller than the threads on a map of at most
  ``IM2COL_SPLIT_MAX_POSITIONS`` outputs (its threads share a
  sample's filter blocks or positions, so batch 1 keeps both cores busy). In training, in
  place of the direct kernel and im2col, forward and stride-1 dx, for layers of at least
  ``OUTER_TRAINING_MIN_FILTERS`` filters per group (``OUTER_TRAINING_MIN_FILTERS_NARROW``
  without AVX-512) and ``OUTER_TRAINING_MIN_TAPS`` taps (:func:`outer_trains`), where
  it runs 5-45% faster (it is exact: im2col's error class); and dw (``outer.weight_grad``)
  from ``OUTER_DW_MIN_FILTERS`` filters in place of the direct kernel's, an unrolling
  im2col's and small maps' Winograd dw (:func:`outer_weight_grad`).
* ``"pointwise"``: the float32 1x1 unpadded kernel at inference, any stride
  (``compiled/pointwise.py``: positions in the vector lanes, the epilogue in registers),
  at batch 1 and on maps of at least ``POINTWISE_MIN_POSITIONS`` outputs, on a CPU with
  AVX-512 (:func:`pointwise_fits`; without it BLAS wins those layers).
* ``"gemm1x1"``: a 1x1 stride-1 unpadded convolution is one matrix product per sample;
  at inference a strided one too, of its subsampled input (conv_gemm._pointwise: per
  sample on the block threads, each product followed by its epilogue on the thread that
  wrote it; one wide product of a thread's samples on maps under
  ``conv_gemm.POINTWISE_WIDE_BELOW`` positions; split by filters at batch 1).
* ``"im2col"``: chunked im2col + matrix products (``conv_gemm``), every other case,
  every float64 layer (exact to 1e-10) and everything under ``VOLNET_KERNELS=numpy``;
  and an inference forward of a batch smaller than the block threads on maps of at most
  ``IM2COL_SPLIT_MAX_POSITIONS`` outputs (:func:`split_fits`), whose product conv_gemm
  splits by filters, each thread writing its rows and their epilogue once: one image
  has too few tiles for Winograd, and too few rows for the direct kernel, to keep both
  cores busy (where the outer kernel is off or does not fit: it takes these layers).

Winograd is chosen by the number of output tiles (4x4, over the whole batch): its fixed
costs are the filter transform (a*a*F*C values, as many as 4 images' worth of products
at 49 tiles) and the tiles' transforms, which only pay back over enough tiles. Measured
on the 2-core machine, two threads, wall clock (benchmarks/README.md): forward and dx
win from ~128 tiles up (16x256x14x14, 256 tiles: 21 vs im2col 27 ms; 1x512x28x28, 49
tiles: 32 vs 24 ms, 13 of them the filter transform); dw, whose output is a*a*F*C
partial sums per thread, from ~512 (16x128x28x28, 784 tiles: 29 vs 41 ms; 16x256x14x14:
40 vs 35). With the vectorised tile transforms (benchmarks/README.md sections 32 and 36)
both moved down: dx from 64 tiles (16x512x7x7), dw from 256 (16x256x14x14). With few channels the transforms (whose cost grows with C + F) outweigh the
products' saving (which grows with C x F), so forward also needs tiles x min(C, F) >= 2^14:
1x64x56x56 (196 tiles x 64) ran 5.7 ms against im2col's 4.9, 1x128x56x56 6.3 against 10.8,
2x64x56x56 4.7 against 7.5. An inference forward keeps its filter transform
(weight_cache), and with the vectorised tile transforms (benchmarks/README.md section
32) it wins far lower: from tiles x min(C, F) >= 2^13 and tiles >= F x C / 6144 (one
thread, ms, Winograd against im2col: 1x64x28x28 0.40 / 0.61, 1x64x56x56 1.06 / 2.29,
1x256x14x14 1.43 / 4.63, 1x128x14x14 0.45 / 0.52; 1x512x14x14 (16 tiles) 15.0 / 9.7 and
1x512x7x7 17.8 / 2.1 lose to the 38 MB of U read per call). ``VOLNET_WINOGRAD=0`` (or
``conv_choice.WINOGRAD = False``) turns it off.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from volnet.functional import conv_gemm
from volnet.runtime import backend, block_threads

WINOGRAD = os.environ.get("VOLNET_WINOGRAD", "1").strip() != "0"   # on unless "0"
WINOGRAD_MIN_TILES = 64       # forward and dx: 4x4 output tiles over the batch (was 128
#                               until the vectorised transforms; N16 C512 7x7's dx, 64
#                               tiles, runs 10-18% faster by Winograd: benchmarks/README.md, 36)
WINOGRAD_MIN_WORK = 1 << 14   # ... and tiles x min(C, F): the products' saving must beat the
#                               transforms, whose cost grows with C + F, not C x F
WINOGRAD_MIN_TILES_DW = 256   # weight gradient (was 512; N16 C256 14x14, 256 tiles, runs
#                               fwd+bwd 14-15% faster with dw by Winograd: README, 36).
#                               N16 C512 7x7 (64 tiles) stays on im2col (its forward's kept
#                               columns): with section 43's back-transform Winograd dw is
#                               level on one thread (CPU ms 18.6 vs 18.7) and loses on two
#                               (critical path 15.1 vs 10.3: a 38 MB partial sum per thread)
WINOGRAD_MIN_CHANNELS = 8     # input and output channels
# An inference forward reuses its cached filter transform (weight_cache): no transform to
# pay back, only tiles x min(C, F) enough to beat the tile transforms, and enough tiles to
# amortise reading U (36 x F x C floats, 4x the filters: 38 MB at 512x512) once per call.
WINOGRAD_MIN_WORK_CACHED = 1 << 13   # (was 2^11: at batch 1 the 28x28 layers of 96-128
#   channels, 49 tiles, now run the outer kernel: level in time (plan, idle-to-loaded, three
#   alternations, ms: ResNet-18 b1 15.8/18.7/14.9 -> 14.6/15.2/14.9, ResNet-50 b1 41.0/44.4/
#   40.2 -> 41.1/45.7/39.4, GoogLeNet b1 19.8/18.6/20.7 -> 17.6/20.6/22.1), and their
#   transforms and copies, 8.9 MB of ResNet-50 b1's 10.6 MB cache, are not kept;
#   benchmarks/README.md, 56)
WINOGRAD_FILTERS_PER_TILE = 6144   # ... and tiles >= F * C / this (was 8192: in a
#   network's plan U comes from memory; at 512x512 that is 42.7 tiles: ResNet-50 b8's 512@7x7
#   layers (32 tiles) ran 12.3-12.7 ms by Winograd against 9.8-10.3 by the outer kernel, which
#   keeps nothing (their 90 MB of U and filter copies left the weight cache), VGG-16 b1's
#   512@28x28 (49 tiles) 18.0-18.1 against 22.4-24.3; benchmarks/README.md, 54)
# Training's dx and dw by Winograd where the thresholds pick it: on unless "0", which gives
# them to the exact kernels (direct / im2col) and keeps Winograd for inference. The
# adversarial replay over 40 seeds (benchmarks/training_faithfulness.py; benchmarks/
# README.md, "Training faithfulness over seeds") finds no faithfulness to buy: its rare
# jumps (10-10^5x the usual divergence from float64, a different branch taken) struck the
# exact kernels on 5 seeds, Winograd dx and dw on 7 (3 of them alone, the exact kernels 1
# alone) and PyTorch float32 on 4; median ratio to PyTorch's divergence 0.71-0.80 exact,
# 0.79-1.05 Winograd. "0" costs 5% of a VGG CIFAR b128 step, 14% of ResNet-18 b16's.
WINOGRAD_TRAINING = os.environ.get("VOLNET_WINOGRAD_TRAINING", "1").strip() != "0"
POINTWISE = os.environ.get("VOLNET_POINTWISE", "1").strip() != "0"    # on unless "0"
POINTWISE_MIN_POSITIONS = 256  # an inference 1x1 layer (any stride) runs the pointwise kernel
#   (compiled/pointwise.py) at batch 1, and at any batch on maps of at least this many
#   outputs; BLAS's one wide product of a thread's samples keeps smaller maps (its epilogue
#   in the transposing pass, conv_gemm._pointwise). Two threads, median us, BLAS / outer /
#   pointwise (benchmarks/README.md, 60): b1 64->256 56x56 504 / 484 / 354, 256->128 56x56
#   852 / 947 / 651, 512->128 28x28 416 / 443 / 357, 256->1024 14x14 381 / 380 / 342,
#   512->2048 7x7 505 / 494 / 442; b8 256->64 56x56 2981 / 2999 / 2484, 512->256 28x28
#   4346 / 4775 / 4187, but 1024->512 14x14 4467 / 4341 / 5038 and 2048->512 7x7 2399 /
#   2378 / 2713 (a 7x7 map fills 49 of its 64 lanes)
OUTER = os.environ.get("VOLNET_OUTER", "1").strip() != "0"        # on unless "0"
OUTER_MIN_CHANNELS = 8   # C/G; an inference forward runs the outer kernel (compiled/outer.py)
#   where Winograd does not fit, or the batch is smaller than the threads on a map of at most
#   IM2COL_SPLIT_MAX_POSITIONS outputs. Two threads, ms, kernel before against outer
#   (benchmarks/README.md, 51): ResNet-18 b1 256@14x14 im2col split 1.05 / 0.65, 512@7x7
#   1.16 / 0.82, 3x3 s2 0.51-0.65 / 0.39-0.48; b8 3x3 s2 2.9-3.6 / 2.5-3.2. Not Winograd's
#   56x56 and 28x28 maps (b1 64@56x56 0.49 / 0.70; b8 every 3x3 s1 layer 2.6-3.8 / 4.4-5.8),
#   not 1x1 layers (BLAS; one thread, ResNet-50 b1: 0.60-1.24 / 0.65-1.46, strided 1.16-1.61
#   / 1.45-1.71)
OUTER_MIN_FILTERS = 64   # F/G: ... or this many filters per group (a full register block),
#   whatever the channels: the 3-channel stems (ResNet-18's 3->64 7x7 s2 in the plan, direct
#   / outer: b1 1.28-1.34 / 1.11-1.13 ms, b8 7.7-8.7 / 7.2-8.4; benchmarks/README.md, 56).
#   Not fewer channels and filters (LeNet's 1->6, CIFAR's 3->12: a 16-filter vector mostly
#   empty; the direct kernel's blocks of 4-8 filters fit them)
OUTER_TRAINING_MIN_FILTERS = 64   # F/G; a training forward or a stride-1 dx that the exact
#   kernels (direct, im2col) would run goes to the outer kernel with at least this many
#   filters per group (one full register block of 64) and OUTER_TRAINING_MIN_TAPS taps
#   (C/G * KH * KW; dx: its adjoint's, C/G filters of F/G * KH * KW taps), an im2col
#   forward that would keep its columns for dw (conv_gemm.keeps_columns) too since the
#   outer dw's parts stopped summing into a fresh array (two threads, ms, kept im2col /
#   outer, forward + backward: N16 512@7x7 34.8 / 32.2, N16 256->512 s2 14x14 26.2 / 26.2;
#   benchmarks/README.md, 62). One thread, CPU ms,
#   current kernel / outer (benchmarks/README.md, 52): forward, direct: N16 256@14x14 20.0
#   / 17.3, 128@28x28 18.7 / 17.5, N4 128@7x7 0.46 / 0.32, 3x3 s2 10.8-10.9 / 9.3-10.0,
#   AlexNet conv1 (363 taps, 96 filters) 8.9 / 8.4, N128 32->64 16x16 6.7 / 6.4; im2col:
#   5x5 64->64 28x28 21.3 / 12.0, N32 512@7x7 (columns not kept) 44.7 / 34.8; dx by direct
#   or im2col 0.56-0.82 of their time the same way (N16 512@7x7 im2col 23.7 / 19.4); level
#   on 56x56 and larger maps (64@56x56 18.8 / 19.0, 64@224x224 84.7 / 86.3). Not fewer
#   filters (48: 4.8 / 4.9, 32: 13.1 / 13.6, 12-16: 1.1-1.8x) or taps (24->64 3x3, 216
#   taps: 4.8 / 5.1; the 7x7 stems, 147: 1.06), not Winograd's dx (1.2-1.8x), not
#   strided 1x1 layers (unrolled by a strided copy: N64 512->1024 28x28 s2 91 / 117)
OUTER_TRAINING_MIN_TAPS = 256
OUTER_TRAINING_MIN_FILTERS_NARROW = 32   # the same without AVX-512, where the kernel's
#   register block is 16 filters (outer_kernels.block_vectors): the VGG-style CIFAR net's
#   32-filter conv2 (forward and dx) goes to it, b128 step, in-process A/B on a 2-core EPYC,
#   median ms: 172.5 -> 157.0 (ratio to PyTorch 0.88 -> 0.80); 16 made no other plan there
#   (benchmarks/README.md, 63)
OUTER_DW_MIN_FILTERS = 16     # F/G; dw by the outer kernel (its register block with taps
#   and positions swapped: outer.weight_grad) in place of the direct kernel's dw and of an
#   im2col dw that unrolls its own columns, from one full vector of 16 filters, any taps;
#   and in place of Winograd's dw on maps of at most WINOGRAD_DW_SMALL_MAP outputs with
#   min(C, F) <= OUTER_DW_WINOGRAD_CHANNELS. One thread, CPU ms, current / outer
#   (benchmarks/README.md, 52): direct: LeNet conv2 (16 filters) 0.50 / 0.23, AlexNet conv1
#   12.7 / 8.1, ResNet-18 stem 29.4 / 22.1, 64->128 s2 16.7 / 9.4, N128 3->32 2.5 / 2.0,
#   32->32 32x32 16.7 / 12.8; im2col: 128->256 s2 12.6 / 9.2, 5x5 64->64 28x28 25.3 / 11.7,
#   N32 512@7x7 44.9 / 39.5; Winograd, N128 16x16: 32->64 8.6 / 6.1, 64->64 13.4 / 11.8. Not
#   fewer filters (CIFAR 3->12 0.50 / 1.15, LeNet conv1 1->6 0.24 / 0.81), not a dw that
#   reads columns its im2col forward kept (N16 512@7x7 18.5 / 20.4), not Winograd's larger
#   maps or channels (256@14x14 13.4 / 17.9, 128@28x28 11.0 / 17.2, 64@56x56 17.6 / 18.0)
OUTER_DW_WINOGRAD_CHANNELS = 64
DIRECT = os.environ.get("VOLNET_DIRECT", "1").strip() != "0"       # on unless "0"
DIRECT_MAX_TAPS = 1536        # C/G * KH * KW; above, the taps' input rows no longer stay in
#                               cache and BLAS wins (one thread, forward ms, direct vs im2col:
#                               C128 3x3 s2 11.3 vs 12.3, C256 3x3 20.0 vs 20.8 and s2 13.1 vs
#                               10.4, C512 3x3 7x7 24.7 vs 20.0; benchmarks/README.md, 33)
DIRECT_MAX_TAPS_BATCH = 2304  # the training forward of a layer that fits Winograd (3x3, stride 1;
#                               barred there), with at least DIRECT_BATCH_POSITIONS outputs
#                               per filter over the batch: up to C256 3x3 (row, fwd+bwd, ms,
#                               direct vs im2col forward: N16 C256 14x14 one thread 47.3 vs
#                               51.1, two 28.5 vs 34.1; forward alone C192 14x14 11.2 vs 12.6;
#                               not at 16x13x13 19.8 vs 18.5, 16x7x7, batch 1 or stride 2;
#                               benchmarks/README.md, 36)
DIRECT_BATCH_POSITIONS = 3136  # N x Ho x Wo: 16 x 14 x 14 (4 x 28 x 28 was equal)
DIRECT_MAX_TAPS_DW = 640     # dw: C64 3x3 (576) 29 vs im2col 39 ms, stem 7x7x3 s2 38 vs 56;
#                               C128 3x3 s2 (1152) 23 vs 14 (benchmarks/README.md, 33)
DIRECT_MAX_TAPS_DX = 1536    # strided dx by phases (F/G x taps landing on one phase), any
#                               C/G (was 640 and C/G >= 4 with a forward that fits the direct
#                               kernel). Two threads, after the suite's gap, ms, phases /
#                               col2im: N16 3x3 s2 128->256 28x28 (1024) 10.6 / 18.7, 96->192
#                               6.1 / 10.5, 192->384 (1536) 20.5 / 25.4, 128->256 14x14 5.6 /
#                               6.2; AlexNet's 3->96 11x11 s4 16.5 / 20.8, ResNet's 3->64 7x7
#                               s2 29.2 / 47.2, N64 1->6 5x5 s2 0.55 / 0.85; not beyond:
#                               256->512 14x14 (2048) 19.5 / 12.3, N8 15.4 / 6.5, 28x28 37.3 /
#                               37.6 (benchmarks/README.md, section 61)
DIRECT_MIN_FILTERS = 4        # filters per group: a register block holds 8, so at most half
#                               wasted (forward + dw, one thread: LeNet conv1 1->6 5x5 0.52 vs
#                               im2col 0.82 ms; 3->4 3x3 32x32 N128 1.18 vs 2.05)
DIRECT_WINOGRAD_CHANNELS = 64  # inference: Winograd from min(C, F) = 64 up (C64 56x56 16.7 vs
#                               direct 20.0 ms; C32->64 16x16 8.7 vs 7.6; C32->32 20.3 vs 15.2)
WINOGRAD_DW_SMALL_MAP = 256    # dw: Winograd also below DIRECT_WINOGRAD_CHANNELS on output maps
WINOGRAD_DW_SMALL_MAP_CHANNELS = 32  # of at most this many positions with min(C, F) at least
#   this: the direct dw kernel slows on small maps. One thread, CPU ms, direct vs Winograd,
#   N128 (benchmarks/README.md, 49): C32->64 16x16 12.0 vs 9.5 (and 15.5 vs 9.9 in another
#   run), C32->32 16x16 5.7 vs 5.2, C64->32 16x16 11.1 vs 10.1, C48->48 16x16 12.1 vs 9.3,
#   C32->64 8x8 6.7 vs 2.6; not on 32x32 maps (C32->32 16.4 vs 18.0, C16->32 9.1 vs 11.0,
#   C16->16 4.3 vs 6.5) nor 56x56 (N16 C32->64 12.1 vs 12.7).
IM2COL_SPLIT_MAX_POSITIONS = 196  # inference, batch < threads: im2col with its product split
#   by filters over the block threads (each thread one-thread BLAS on its rows, then their
#   epilogue) on output maps up to 14x14, over Winograd and direct. In a network's plan
#   Winograd reads its transformed filters (36 F C floats, 4x the filters: 9.4 MB at 256x256)
#   from memory on every call; standalone they stay in cache and hide it. Two threads,
#   batch 1, ms per plan step, idle-machine estimate (benchmarks/README.md, section 40):
#   ResNet 256->256 14x14 Winograd 1.54-1.61 -> 1.10-1.20 (standalone 0.97 vs 1.14);
#   GoogLeNet 128->256 0.97 -> 0.69, 144->288 1.15 -> 0.75, 160->320 1.29 -> 0.89; direct
#   112->224 0.63 -> 0.58, 128->256 s2 0.89 -> 0.72. Not 28x28 (784): 128->128 Winograd
#   0.98-1.05 -> 1.22-1.42, 64->128 s2 direct 0.67 -> 1.00.


def choose(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype,
           filters_cached=False, threads=1) -> str:
    """Name of the kernel that computes this convolution's forward pass
    (``filters_cached``: an inference forward, whose Winograd filter transform is kept;
    ``threads``: block_threads.workers(), which an inference forward's rule reads)."""
    c = x_shape[1]
    f, _, kh, kw = w_shape
    fast = np.dtype(dtype) == np.float32 and backend.compiled(
        touched(x_shape, w_shape, out_size))
    if fast and groups > 1 and groups == c == f:
        return "depthwise"
    if kh == kw == 1 and tuple(padding) == (0, 0) and (tuple(stride) == (1, 1)
                                                       or filters_cached):
        if fast and filters_cached and pointwise_fits(x_shape[0], out_size, threads):
            return "pointwise"
        return "gemm1x1"        # at inference strided too: a subsample, then the products
    if fast and filters_cached and outer_fits(c, f, groups) and (
            split_fits(x_shape[0], w_shape, groups, out_size, threads)
            or not winograd_fits(x_shape[0], c, w_shape, stride, dilation, groups, out_size,
                                 filters_cached=True)):
        return "outer"
    if not fast or (filters_cached and split_fits(x_shape[0], w_shape, groups, out_size,
                                                  threads)):
        return "im2col"
    direct = direct_fits(c, w_shape, groups)
    if winograd_fits(x_shape[0], c, w_shape, stride, dilation, groups, out_size,
                     filters_cached=filters_cached) and (
            not direct or min(c, f) >= DIRECT_WINOGRAD_CHANNELS):
        return "winograd4"
    return "direct" if direct else "im2col"


def touched(x_shape, w_shape, out_size) -> int:
    """Elements a convolution touches (input, filters, output): what ``backend.compiled``
    weighs (under "auto", fewer than its COMPILED_MIN run the NumPy kernels and never load
    numba). The input alone undercounted small maps with wide filters: GoogLeNet's
    160->320 3x3 on a 1x160x7x7 input (7,840 elements, 22.6M multiply-adds) ran NumPy's
    im2col at 85 GFLOP/s (benchmarks/README.md, 55)."""
    return (math.prod(x_shape) + math.prod(w_shape)
            + x_shape[0] * w_shape[0] * out_size[0] * out_size[1])


def pointwise_fits(n, out_size, threads) -> bool:
    """True, when the pointwise kernel is on and the CPU has AVX-512, for an inference 1x1
    layer of a batch smaller than the threads, or of maps of at least
    POINTWISE_MIN_POSITIONS outputs. Without AVX-512 its register block (6 filters x 16
    positions there) loses to BLAS's packed products on every such layer: in-process A/B,
    2-core EPYC, median ms, pointwise / BLAS: ResNet-50 b1 89.0 / 77.6 (and 82.3 / 68.1
    with the block's loops reordered to keep each 16-position slice in L1), b8 432 / 394,
    GoogLeNet b1 42.2 / 38.8 (benchmarks/README.md, 63)."""
    return POINTWISE and wide_vectors() and (
        n < threads or out_size[0] * out_size[1] >= POINTWISE_MIN_POSITIONS)


def wide_vectors() -> bool:
    """Whether the compiled kernels run on AVX-512 (compiled/intrinsics.py); call only once
    they are chosen (numba is loaded)."""
    from volnet.functional.compiled import intrinsics
    return intrinsics.wide_vectors()


def outer_fits(c, f, groups) -> bool:
    """True, when the outer kernel is on, for a layer of at least OUTER_MIN_CHANNELS input
    channels or OUTER_MIN_FILTERS filters per group."""
    return OUTER and (c // groups >= OUTER_MIN_CHANNELS or f // groups >= OUTER_MIN_FILTERS)


def outer_trains(w_shape, groups) -> bool:
    """True, when the outer kernel is on, for a convolution of ``w_shape`` filters that a
    training plan may give it in place of the exact kernels (direct, im2col): a kernel
    larger than 1x1, at least OUTER_TRAINING_MIN_FILTERS filters per group (without
    AVX-512: OUTER_TRAINING_MIN_FILTERS_NARROW) and OUTER_TRAINING_MIN_TAPS taps. Call only
    with the compiled kernels chosen (numba loaded)."""
    f, cg, kh, kw = w_shape
    least = OUTER_TRAINING_MIN_FILTERS if wide_vectors() else OUTER_TRAINING_MIN_FILTERS_NARROW
    return (OUTER and kh * kw > 1 and f // groups >= least
            and cg * kh * kw >= OUTER_TRAINING_MIN_TAPS)


def outer_weight_grad(dw, x_shape, w_shape, out_size, groups, kept, dilation=(1, 1)) -> bool:
    """True, when the outer kernel is on, where it takes a float32 training dw from ``dw``
    (the kernel the rules above pick): a kernel larger than 1x1, at least
    OUTER_DW_MIN_FILTERS filters per group, and ``dw`` the direct kernel, im2col without
    ``kept`` columns (its forward's), or Winograd with min(C, F) <= OUTER_DW_WINOGRAD_CHANNELS
    on a map of at most WINOGRAD_DW_SMALL_MAP outputs or dilated (Winograd then runs per
    sub-grid, each a quarter of the map or less; two threads, median ms, Winograd / outer:
    N16 C64 56x56 F64 d2 16.0 / 14.7, the conv row's dw 11.4-13.5 / 10.5-11.8 and its CPU
    time 24-27 / 17-21; N16 C128 28x28 d4 11.0 / 10.8; not with more channels: N8 C256 28x28
    d2 19.2 / 23.8, N4 C512 28x28 d2 31.1 / 47.9; benchmarks/README.md, section 60)."""
    f, _, kh, kw = w_shape
    if not OUTER or kh * kw == 1 or f // groups < OUTER_DW_MIN_FILTERS:
        return False
    if dw == "winograd4":
        return ((out_size[0] * out_size[1] <= WINOGRAD_DW_SMALL_MAP or max(dilation) > 1)
                and min(x_shape[1], f) <= OUTER_DW_WINOGRAD_CHANNELS)
    return dw == "direct" or (dw == "im2col" and not kept)


def split_fits(n, w_shape, groups, out_size, threads) -> bool:
    """True for an inference forward that im2col splits by filters over the block threads
    (conv_gemm: fewer samples than ``threads``, groups 1, a product of at least
    block_threads.SPLIT_MIN multiply-adds) on maps of at most IM2COL_SPLIT_MAX_POSITIONS
    output positions, where that split product beats Winograd and the direct kernel."""
    f, cg, kh, kw = w_shape
    positions = out_size[0] * out_size[1]
    return (groups == 1 and n < threads and positions <= IM2COL_SPLIT_MAX_POSITIONS
            and n * f * cg * kh * kw * positions >= block_threads.SPLIT_MIN)


def direct_fits(c, w_shape, groups, min_filters=None) -> bool:
    """True, when the direct kernel is on, for a float32 layer of at most
    ``DIRECT_MAX_TAPS`` taps per output and ``min_filters`` (default DIRECT_MIN_FILTERS)
    filters per group, with a kernel larger than 1x1 (a strided 1x1 layer's unrolling is a
    cheap strided copy: ResNet-18's 1x1 stride-2 layers ran 1.4-2.0 ms forward by im2col
    against 2.6-4.0 direct)."""
    f, cg, kh, kw = w_shape
    need = DIRECT_MIN_FILTERS if min_filters is None else min_filters
    return (DIRECT and kh * kw > 1 and cg * kh * kw <= DIRECT_MAX_TAPS
            and f // groups >= need)


def tiles(n, out_size, dilation) -> int:
    """4x4 output tiles of a batch of ``n`` maps, laid on each dilation sub-grid."""
    count = 1
    for length, d in zip(out_size, dilation):
        count *= sum(-(-len(range(s, length, d)) // 4) for s in range(d))
    return n * count


def winograd_fits(n, c, w_shape, stride, dilation, groups, out_size,
                  min_tiles=None, filters_cached=False) -> bool:
    """True, when Winograd is on, for a 3x3 stride-1 layer with equal dilations, enough
    channels, at least ``min_tiles`` (default WINOGRAD_MIN_TILES) output tiles and enough
    work per tile (WINOGRAD_MIN_WORK); with ``filters_cached`` (an inference forward),
    tiles x min(C, F) >= WINOGRAD_MIN_WORK_CACHED and tiles >= F * C /
    WINOGRAD_FILTERS_PER_TILE instead."""
    f, _, kh, kw = w_shape
    d = dilation[0]
    count = tiles(n, out_size, dilation)
    if filters_cached:
        enough = (count * min(c, f) >= WINOGRAD_MIN_WORK_CACHED
                  and count * WINOGRAD_FILTERS_PER_TILE >= f * c)
    else:
        need = WINOGRAD_MIN_TILES if min_tiles is None else min_tiles
        enough = count >= need and count * min(c, f) >= WINOGRAD_MIN_WORK
    return (WINOGRAD and groups == 1 and (kh, kw) == (3, 3) and tuple(stride) == (1, 1)
            and dilation[1] == d and min(c, f) >= WINOGRAD_MIN_CHANNELS and enough)


def weight_grad_kernel(forward: str, x_shape, w_shape, stride, dilation, groups,
                       out_size, winograd=True) -> str:
    """The dw kernel of a layer whose forward pass ran ``forward`` (float32, compiled), by
    the forward's rule with dw's thresholds: Winograd (if ``winograd``) where the layer
    fits it with at least WINOGRAD_MIN_TILES_DW tiles and the direct kernel does not, or C
    and F are both at least DIRECT_WINOGRAD_CHANNELS, or both at least
    WINOGRAD_DW_SMALL_MAP_CHANNELS on maps of at most WINOGRAD_DW_SMALL_MAP outputs; else
    direct up to
    DIRECT_MAX_TAPS_DW taps; else im2col."""
    if forward == "depthwise":
        return forward
    c, (f, cg, kh, kw) = x_shape[1], w_shape
    direct = direct_fits(c, w_shape, groups) and cg * kh * kw <= DIRECT_MAX_TAPS_DW
    small_map = (out_size[0] * out_size[1] <= WINOGRAD_DW_SMALL_MAP
                 and min(c, f) >= WINOGRAD_DW_SMALL_MAP_CHANNELS)
    if winograd and winograd_fits(x_shape[0], c, w_shape, stride, dilation, groups, out_size,
                                  min_tiles=WINOGRAD_MIN_TILES_DW) and (
                         not direct or min(c, f) >= DIRECT_WINOGRAD_CHANNELS or small_map):
        return "winograd4"
    return "direct" if direct else "im2col"


def phase_taps(w_shape, stride, padding, dilation) -> int:
    """The most filter taps that land on one stride x stride phase of the input: the taps
    per filter of dx as stride-1 correlations, one per phase (compiled/direct.py)."""
    per_axis = []
    for k, s, p, d in zip(w_shape[2:], stride, padding, dilation):
        per_axis.append(max(sum((r + p - i * d) % s == 0 for i in range(k)) for r in range(s)))
    return per_axis[0] * per_axis[1]


def adjoint_is_conv(channels_per_group, kernel_size, stride, padding, dilation) -> bool:
    """Whether dx is best computed as a convolution with flipped filters (see conv_gemm).

    Needs stride 1 and padding within the dilated kernel; with few input channels the
    adjoint product is too thin for BLAS and col2im is faster (measured, benchmarks/README.md).
    """
    return channels_per_group >= 16 and adjoint_exists(kernel_size, stride, padding, dilation)


def adjoint_exists(kernel_size, stride, padding, dilation) -> bool:
    """Whether dx is a stride-1 convolution of dout with the flipped filters: stride 1 and
    padding within the dilated kernel."""
    return (tuple(stride) == (1, 1)
            and all(p <= d * (k - 1) for p, d, k in zip(padding, dilation, kernel_size)))


@dataclass(frozen=True)
class ConvPlan:
    """The kernels of one convolution's three passes, decided together.

    Attributes:
        forward: "winograd4", "direct", "outer", "depthwise", "pointwise", "gemm1x1" or
            "im2col".
        input_grad: dx's kernel: "depthwise", "col2im", "direct (phases)" (a strided
            layer's dx as one stride-1 correlation per phase of the input), or, when dx is
            a stride-1 convolution of dout with the flipped, transposed filters, that
            convolution's kernel ("winograd4", "direct", "outer", or "im2col (flipped
            filters)").
        weight_grad: dw's kernel: "depthwise", "winograd4", "direct", "outer" or "im2col".
        adjoint_padding: the padding of dx as a convolution (None: dx by col2im, phases or
            depthwise).
    """

    forward: str
    input_grad: str
    weight_grad: str
    adjoint_padding: tuple[int, int] | None = None

    def names(self) -> dict:
        """{"forward", "input_grad", "weight_grad"}: the kernel each pass runs."""
        return {"forward": self.forward, "input_grad": self.input_grad,
                "weight_grad": self.weight_grad}


def plan(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype,
         training=False) -> ConvPlan:
    """The :class:`ConvPlan` of a convolution, made on the first call with these arguments
    under the current kernel choice and thresholds and reused by every later call.

    ``training`` (a forward that keeps a cache for backward) never runs the forward pass
    by Winograd but by the direct kernel (or im2col where that does not fit): Winograd's
    float32 error, ~10x im2col's, is what training amplifies. In the
    adversarial replay (tests/functional/test_training_faithfulness.py: 50 SGD steps,
    lr 0.02, momentum 0.9, the loss jumping to 32) the final parameters diverged from a
    float64 run by 7.4e-3 with a Winograd F(4x4) forward and 3.3e-7 to 3.5e-7 with an
    im2col forward (dx and dw by F(4x4) or not), PyTorch float32 by 4.4e-7. The direct
    kernel sums in the same float32 class as im2col (seventh round, benchmarks/README.md:
    the replay diverged by the same amount with either). dx and dw keep Winograd where
    the thresholds pick it unless ``WINOGRAD_TRAINING`` is off
    (``VOLNET_WINOGRAD_TRAINING=0``): over 40 seeds of the replay they were about as
    faithful as PyTorch float32 and the exact kernels, rare jumps striking all three.

    The outer kernel (``compiled/outer.py``) is exact in the same sense: each output is
    one float32 sum over its taps with fused multiply-adds, im2col's error class. Where
    :func:`outer_trains` allows, a training forward and a stride-1 dx that would run the
    direct kernel or im2col run it instead (see OUTER_TRAINING_MIN_FILTERS).
    """
    # math.prod, not np.prod: this runs on every convolution call (np.prod cost ~2 us)
    compiled = backend.compiled(touched(x_shape, w_shape, out_size))
    settings = (compiled, compiled and wide_vectors(), block_threads.workers(),
                block_threads.SPLIT_MIN, IM2COL_SPLIT_MAX_POSITIONS, WINOGRAD, WINOGRAD_MIN_TILES,
                WINOGRAD_MIN_WORK, WINOGRAD_MIN_TILES_DW, WINOGRAD_MIN_CHANNELS,
                WINOGRAD_MIN_WORK_CACHED, WINOGRAD_FILTERS_PER_TILE, WINOGRAD_TRAINING, DIRECT,
                DIRECT_MAX_TAPS, DIRECT_MAX_TAPS_DW, DIRECT_MAX_TAPS_DX, DIRECT_MIN_FILTERS,
                DIRECT_WINOGRAD_CHANNELS, DIRECT_MAX_TAPS_BATCH, DIRECT_BATCH_POSITIONS,
                WINOGRAD_DW_SMALL_MAP, WINOGRAD_DW_SMALL_MAP_CHANNELS, POINTWISE,
                POINTWISE_MIN_POSITIONS, OUTER,
                OUTER_MIN_CHANNELS, OUTER_MIN_FILTERS, OUTER_TRAINING_MIN_FILTERS,
                OUTER_TRAINING_MIN_TAPS, OUTER_TRAINING_MIN_FILTERS_NARROW,
                OUTER_DW_MIN_FILTERS, OUTER_DW_WINOGRAD_CHANNELS, conv_gemm.KEEP_BYTES)
    return _plan(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), tuple(dilation),
                 int(groups), tuple(out_size), np.dtype(dtype), bool(training), settings)


def plan_stats() -> dict:
    """{"reused", "made", "cached"}: plan lookups answered from the cache, plans made, plans
    held (benchmark records say whether calls reused their plans)."""
    info = _plan.cache_info()
    return {"reused": info.hits, "made": info.misses, "cached": info.currsize}


@functools.lru_cache(maxsize=4096)
def _plan(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype, training,
          settings) -> ConvPlan:
    # settings is part of the key only: choose() reads the live settings, which are these,
    # so switching kernels or changing a threshold makes (and caches) a new plan
    fits = choose(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype)
    fast = dtype == np.float32 and settings[0]
    # whether an im2col forward keeps its columns for dw (then dw reads them)
    keeps = conv_gemm.keeps_columns(x_shape, w_shape, out_size, dtype.itemsize)
    if fits == "depthwise":
        return ConvPlan(fits, fits, fits)
    if training:     # never a Winograd forward (see above): direct where it fits, else im2col
        fwd = fits
        if fits == "winograd4":
            batch_fits = (x_shape[1] // groups * w_shape[2] * w_shape[3] <= DIRECT_MAX_TAPS_BATCH
                          and x_shape[0] * out_size[0] * out_size[1] >= DIRECT_BATCH_POSITIONS)
            fwd = ("direct" if direct_fits(x_shape[1], w_shape, groups) or (DIRECT and batch_fits)
                   else "im2col")
        if fast and outer_trains(w_shape, groups) and fwd in ("direct", "im2col"):
            fwd = "outer"      # exact too (see plan's docstring)
    else:   # inference: the filter transform is cached, so smaller layers earn Winograd,
        #     and a batch smaller than the threads splits im2col's product by filters
        fwd = choose(x_shape, w_shape, stride, padding, dilation, groups, out_size, dtype,
                     filters_cached=True, threads=settings[2])
    f, _, kh, kw = w_shape
    # training's dx and dw: exact kernels when WINOGRAD_TRAINING is off (see above)
    backward_winograd = WINOGRAD_TRAINING or not training
    dw = ("im2col" if fits in ("gemm1x1", "im2col") else
          weight_grad_kernel(fits, x_shape, w_shape, stride, dilation, groups, out_size,
                             winograd=backward_winograd))
    if fast and outer_weight_grad(dw, x_shape, w_shape, out_size, groups,
                                  fwd == "im2col" and keeps, dilation):
        dw = "outer"
    full = tuple(d * (k - 1) - p for d, k, p in zip(dilation, (kh, kw), padding))
    if not adjoint_is_conv(x_shape[1] // groups, (kh, kw), stride, padding, dilation):
        # few input channels: the adjoint's products are too thin for BLAS, not for the
        # direct kernel (its filter blocks pad C/G up to 8): CIFAR's 3->12 layer 1.1 ms
        # against col2im's 3.0, LeNet conv2 0.66 against 1.31 (benchmarks/README.md, 33)
        if fits in ("direct", "winograd4") and adjoint_exists(
                (kh, kw), stride, padding, dilation) and direct_fits(
                f, (x_shape[1], f // groups, kh, kw), groups, min_filters=1):
            return ConvPlan(fwd, "direct", dw, full)
        if fast and DIRECT and kh * kw > 1 and phase_taps(
                w_shape, stride, padding, dilation) * (f // groups) <= DIRECT_MAX_TAPS_DX:
            return ConvPlan(fwd, "direct (phases)", dw)
        return ConvPlan(fwd, "col2im", dw)
    adjoint_w = (x_shape[1], f // groups, kh, kw)
    dx = choose((x_shape[0], f) + tuple(out_size), adjoint_w, (1, 1), full, dilation, groups,
                x_shape[2:], dtype)
    if dx == "winograd4" and not backward_winograd:
        dx = "direct" if direct_fits(f, adjoint_w, groups) else "im2col"
    if dx in ("direct", "im2col") and fast and outer_trains(adjoint_w, groups):
        dx = "outer"
    return ConvPlan(fwd, dx if dx in ("winograd4", "direct", "outer")
                    else "im2col (flipped filters)", dw, full)
