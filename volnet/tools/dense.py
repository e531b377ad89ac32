"""Dense sliding-window evaluation of a classifier, with shift-and-stitch for finer strides.

The image and the map, precisely:

* ``image`` is one volume (C, H, W) or a batch (N, C, H, W), floating point,
  at least as big as the classifier's input (C, h, w).
* With step s (per axis), map position (i, j) holds the classifier's scores
  for the crop ``image[..., i*s : i*s + h, j*s : j*s + w]``. Only crops that
  fit entirely are scored, so the map is
  ``((H - h) // s + 1) x ((W - w) // s + 1)``; pixels beyond the last crop
  are ignored.
* One pass of the converted network scores every crop whose top-left corner
  is a multiple of the network's stride S. Any other step s is reached by
  shift-and-stitch: each distinct offset ``(i*s) mod S`` needs one pass over
  the image shifted by that offset, and the passes are interleaved; for s = S/k
  that is k*k passes, e.g. (0,0), (0,16), (16,0), (16,16) for VGG at 16.

A map position equals the original network on its crop exactly when the
network has no zero padding (``FullyConvNet.exact``). With padding, a position
sees the real pixels around its crop where a lone crop sees zeros (the usual
fully convolutional evaluation), as far as its pass reaches: the pass for
shift (a, b) covers the image from (a, b) to the far edge of its last crop.
``exact=True`` falls back to crop-by-crop evaluation in that case.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, DTypeError, ShapeError, VolnetError
from volnet.functional.loss import softmax
from volnet.layers import AdaptiveAvgPool2d, Conv2d, GlobalAvgPool2d, Layer
from volnet.tools.fully_conv import FullyConvNet, to_fully_conv


def dense_scores(net: Layer, image: np.ndarray, stride=None, input_shape=None, *,
                 exact: bool = False) -> np.ndarray:
    """Score every crop on a grid over ``image`` with a few passes of the converted network.

    Args:
        net: the original classifier, or a :class:`FullyConvNet` from
            :func:`to_fully_conv` (pass one to avoid converting on every call).
        image: (C, H, W) or (N, C, H, W), floating point.
        stride: step s between crops, an int or (SH, SW); default the network's
            own stride (32 for VGG). Other steps use shift-and-stitch.
        input_shape: the classifier's per-example input (C, h, w); default the
            smallest square input the network accepts (required for networks with
            global or adaptive pooling, whose input size is not fixed).
        exact: if the network zero-pads (``exact`` is False on the converted
            net), score crop by crop instead, so each position equals the original
            network on its crop.

    Returns:
        Scores (K, H_map, W_map) for one image, (N, K, H_map, W_map) for a batch;
        [..., k, i, j] is class k for the crop at (i * s, j * s).

    Example:
        >>> net = Sequential(Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 3 * 3, 5))
        >>> dense_scores(net, np.zeros((1, 12, 12), np.float32)).shape
        (5, 3, 3)
        >>> dense_scores(net, np.zeros((1, 12, 12), np.float32), stride=1).shape
        (5, 5, 5)
    """
    fc = as_fully_conv(net, input_shape)
    x, batched = _as_batch(image, fc.input_shape)
    step = _step(stride, fc.stride)
    if exact and not fc.exact:
        return crop_scores(fc, image, step)
    counts = [(x.shape[2 + a] - fc.input_shape[1 + a]) // step[a] + 1 for a in range(2)]
    rows = [list(_offsets(counts[a], step[a], fc.stride[a])) for a in range(2)]
    out = None
    for shift_h, pick_h in rows[0]:
        for shift_w, pick_w in rows[1]:
            scores = _one_pass(fc, x, (shift_h, shift_w), (pick_h[1], pick_w[1]))
            if out is None:
                out = np.empty(scores.shape[:2] + tuple(counts), dtype=scores.dtype)
            out[:, :, pick_h[0][:, None], pick_w[0][None, :]] = scores
    return out if batched else out[0]


def _offsets(count: int, step: int, net_stride: int):
    """Group crop positions by the pass that scores them.

    Position i starts at i*step = shift + p*net_stride: the pass over the image
    shifted by ``shift`` holds it at map index p. Yields (shift, (positions, p)).
    """
    starts = np.arange(count) * step
    shifts, indices = starts % net_stride, starts // net_stride
    for shift in np.unique(shifts):
        positions = np.flatnonzero(shifts == shift)
        yield int(shift), (positions, indices[positions])


def _one_pass(fc: FullyConvNet, x: np.ndarray, shift: tuple, picks: tuple) -> np.ndarray:
    """Scores at map indices ``picks`` of the image shifted by ``shift`` (one forward)."""
    # Cut the shifted image just past its last needed crop: less work, and the
    # map then starts and ends exactly on crops that fit.
    extent = [fc.input_shape[1 + a] + int(picks[a].max()) * fc.stride[a] for a in range(2)]
    window = x[:, :, shift[0]:shift[0] + extent[0], shift[1]:shift[1] + extent[1]]
    scores = fc.forward(np.ascontiguousarray(window))
    return scores[:, :, picks[0][:, None], picks[1][None, :]]


def crop_scores(net: Layer, image: np.ndarray, stride=None, input_shape=None, *,
                batch_size: int = 4) -> np.ndarray:
    """The definition :func:`dense_scores` computes faster: the classifier on every crop.

    Same arguments and result as :func:`dense_scores`; crops go through ``net``
    ``batch_size`` at a time. Use it as the reference, or for exact scores of a
    zero-padding network.

    Example:
        >>> net = Sequential(Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 3 * 3, 5))
        >>> x = np.random.default_rng(0).standard_normal((1, 12, 12)).astype(np.float32)
        >>> np.allclose(crop_scores(net, x, 2, (1, 8, 8)), dense_scores(net, x, 2, (1, 8, 8)), atol=1e-5)
        True
    """
    if batch_size < 1:
        raise ConfigError(f"crop_scores: batch_size must be >= 1, got {batch_size}")
    shape = net.input_shape if isinstance(net, FullyConvNet) else _input_shape(net, input_shape)
    x, batched = _as_batch(image, shape)
    if stride is None and not isinstance(net, FullyConvNet):
        raise ConfigError("crop_scores needs a stride for an unconverted network (a converted "
                          "one defaults to its own)")
    step = _step(stride, getattr(net, "stride", None))
    h, w = shape[1:]
    counts = [(x.shape[2 + a] - shape[1 + a]) // step[a] + 1 for a in range(2)]
    corners = [(n, i * step[0], j * step[1]) for n in range(len(x))
               for i in range(counts[0]) for j in range(counts[1])]
    outs = []
    for start in range(0, len(corners), batch_size):
        crops = np.stack([x[n, :, top:top + h, left:left + w]
                          for n, top, left in corners[start:start + batch_size]])
        outs.append(net.forward(crops).reshape(len(crops), -1))
    scores = np.concatenate(outs).reshape(len(x), *counts, -1).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(scores) if batched else np.ascontiguousarray(scores[0])


def average_scores(net: Layer, image: np.ndarray, stride=None, input_shape=None, *,
                   probabilities: bool = True) -> np.ndarray:
    """Classify a bigger image by averaging over every crop position (the lecture's
    "evaluate at many positions and average").

    Args:
        net, image, stride, input_shape: as in :func:`dense_scores`.
        probabilities: average softmax probabilities (default) rather than raw
            scores; pass False for a network that already ends in Softmax.

    Returns:
        (K,) for one image, (N, K) for a batch.

    Example:
        >>> net = Sequential(Conv2d(1, 4, 3), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 3 * 3, 5))
        >>> float(average_scores(net, np.ones((1, 12, 12), np.float32)).sum().round(6))
        1.0
    """
    scores = dense_scores(net, image, stride, input_shape)
    maps = scores if scores.ndim == 4 else scores[None]
    if probabilities:
        n, k, h, w = maps.shape
        flat = maps.transpose(0, 2, 3, 1).reshape(-1, k)
        maps = softmax(flat).reshape(n, h, w, k).transpose(0, 3, 1, 2)
    mean = maps.mean(axis=(2, 3))
    return mean if scores.ndim == 4 else mean[0]


def as_fully_conv(net: Layer, input_shape=None) -> FullyConvNet:
    """``net`` itself if already converted (checking ``input_shape``), else its conversion."""
    if isinstance(net, FullyConvNet):
        if input_shape is not None and tuple(input_shape) != net.input_shape:
            raise ConfigError(f"input_shape {tuple(input_shape)} differs from the converted "
                              f"network's {net.input_shape}; convert again with the new shape")
        return net
    return to_fully_conv(net, _input_shape(net, input_shape))


def _input_shape(net: Layer, input_shape) -> tuple:
    if input_shape is not None:
        return tuple(input_shape)
    return infer_input_shape(net)


def infer_input_shape(net: Layer, largest: int = 1024) -> tuple[int, int, int]:
    """The smallest square input (C, H, H) a classifier accepts, from shapes alone.

    C is the first Conv2d's depth. Networks with global or adaptive pooling
    accept every size, so for them the size must be given.

    Example:
        >>> from volnet.models import lenet5
        >>> infer_input_shape(lenet5())
        (1, 28, 28)
    """
    layers = [layer for _, layer in net.named_layers()]
    pools = [type(l).__name__ for l in layers if isinstance(l, (GlobalAvgPool2d, AdaptiveAvgPool2d))]
    convs = [l for l in layers if isinstance(l, Conv2d)]
    if pools or not convs:
        why = f"it contains {pools[0]}, which accepts any size" if pools else "it has no Conv2d"
        raise ConfigError(f"cannot infer the input size of {type(net).__name__}: {why}; "
                          "pass input_shape=(C, H, W), the size it was trained on")
    channels = convs[0].in_channels
    for size in range(1, largest + 1):
        try:
            net.output_shape((channels, size, size))
        except (VolnetError, ValueError):
            continue
        return (channels, size, size)
    raise ConfigError(f"{type(net).__name__} accepts no square input up to {largest}x{largest}; "
                      "pass input_shape=(C, H, W)")


def _as_batch(image, input_shape: tuple) -> tuple[np.ndarray, bool]:
    if not isinstance(image, np.ndarray):
        raise DTypeError(f"image must be a NumPy array, got {type(image).__name__}")
    if not np.issubdtype(image.dtype, np.floating):
        raise DTypeError(f"image must be floating point, got dtype {image.dtype}; convert with "
                         "image.astype(np.float32) (divide uint8 pixels by 255)")
    if image.ndim not in (3, 4):
        raise ShapeError(f"image must be (C, H, W) or (N, C, H, W), got shape {image.shape}")
    x = image if image.ndim == 4 else image[None]
    c, h, w = input_shape
    if x.shape[1] != c or x.shape[2] < h or x.shape[3] < w:
        raise ShapeError(f"image of shape {image.shape} does not hold a {c}x{h}x{w} crop "
                         f"(C x H x W) of the classifier's input; it needs {c} channels and at "
                         f"least {h}x{w} pixels (resize it, or pass a smaller input_shape)")
    return x, image.ndim == 4


def _step(stride, net_stride: tuple) -> tuple[int, int]:
    if stride is None:
        return tuple(net_stride)
    pair = (stride, stride) if np.isscalar(stride) else tuple(stride)
    if len(pair) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 and s >= 1 for s in pair):
        raise ConfigError(f"stride must be a positive int or a pair of them, got {stride!r}")
    return int(pair[0]), int(pair[1])
