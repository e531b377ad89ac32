"""``/lecture/backprop`` (slides 13 and 16): where the gradients of CONV and max POOL go.

A CONV layer's input gradient is a *full* convolution of the output gradient
with the spatially flipped filters: pad dout by F - 1 on each side, slide each
filter rotated by 180 degrees over it and sum over the filters. The page shows
that sum for one input position, term by term, beside ``Conv2d.backward``'s
number for the same position. A max pool's backward sends each output gradient
to the argmax of its window, as ``MaxPool2d.backward`` does.
"""

from __future__ import annotations

import numpy as np

import volnet as vn
from volnet.errors import ConfigError
from volnet.web.lecture.conv import check_range

LIMITS = {"W": (3, 8), "F": (2, 4), "K": (1, 3), "seed": (0, 10**6), "cell": (0, 10**6)}


def conv_backprop_view(W: int = 5, F: int = 3, K: int = 2, seed: int = 0, cell: int = 0) -> dict:
    """One-channel W x W input, K filters F x F, stride 1, no padding: dx two ways.

    ``cell`` picks the input position (row by row, wrapping) whose gradient is spelt out.
    """
    check_range({"W": W, "F": F, "K": K, "seed": seed, "cell": cell}, LIMITS)
    if F > W:
        raise ConfigError(f"the filter (F={F}) must fit in the input (W={W}); choose F <= W")
    rng = np.random.default_rng(seed)
    layer = vn.Conv2d(1, K, F, dtype=np.float64)
    layer.params["weight"][...] = rng.integers(-2, 3, size=(K, 1, F, F))
    x = rng.integers(0, 4, size=(1, 1, W, W)).astype(np.float64)
    out = layer.forward(x, training=True)
    dout = rng.integers(-2, 3, size=out.shape).astype(np.float64)
    dx = layer.backward(dout)[0, 0]                       # volnet's backward
    flipped = layer.params["weight"][:, 0, ::-1, ::-1]    # (K, F, F), rotated 180 degrees
    padded = np.pad(dout[0], ((0, 0), (F - 1, F - 1), (F - 1, F - 1)))
    full = np.array([[np.sum(padded[:, i:i + F, j:j + F] * flipped) for j in range(W)]
                     for i in range(W)])                  # the full convolution, written out
    i, j = divmod(cell % (W * W), W)
    products = padded[:, i:i + F, j:j + F] * flipped
    return {
        "W": W, "F": F, "K": K, "out_size": W - F + 1,
        "x": x[0, 0].tolist(), "weights": layer.params["weight"][:, 0].tolist(),
        "flipped": flipped.tolist(), "dout": dout[0].tolist(), "dout_padded": padded.tolist(),
        "dx_full_conv": full.tolist(), "dx_backward": dx.tolist(),
        "dw_backward": layer.grads["weight"][:, 0].tolist(),
        "cell": {"index": cell % (W * W), "i": i, "j": j, "products": products.tolist(),
                 "sum": float(products.sum()), "backward": float(dx[i, j])},
    }


def maxpool_backprop_view(W: int = 4, seed: int = 0) -> dict:
    """A 2x2 stride-2 max pool on a W x W input: forward, dout, and dx from ``MaxPool2d.backward``."""
    check_range({"W": W, "seed": seed}, {"W": (2, 8), "seed": (0, 10**6)})
    W -= W % 2
    rng = np.random.default_rng(seed)
    # distinct values: no ties, so every window has one argmax
    x = rng.permutation(W * W).reshape(1, 1, W, W).astype(np.float64)
    pool = vn.MaxPool2d(2, stride=2)
    out = pool.forward(x, training=True)
    dout = rng.integers(1, 10, size=out.shape).astype(np.float64)
    dx = pool.backward(dout)
    argmax = [[divmod(int(np.argmax(x[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2])), 2)
               for j in range(W // 2)] for i in range(W // 2)]
    routes = [[[2 * i + a, 2 * j + b] for j, (a, b) in enumerate(row)]
              for i, row in enumerate(argmax)]
    return {"W": W, "x": x[0, 0].tolist(), "out": out[0, 0].tolist(),
            "dout": dout[0, 0].tolist(), "dx": dx[0, 0].tolist(), "routes": routes}
