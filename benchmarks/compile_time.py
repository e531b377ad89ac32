"""Seconds to the first compiled conv call in a fresh process (compile, or load from cache).

Run twice with one empty cache folder: ``export NUMBA_CACHE_DIR=$(mktemp -d)``, then
``python -m benchmarks.compile_time`` (compiles), then again (loads the cache).
"""

from __future__ import annotations

import time


def main():
    t0 = time.perf_counter()
    import numpy as np

    from volnet.functional.conv import conv2d_backward, conv2d_forward
    t1 = time.perf_counter()
    # 16 maps of 28x28 outputs, 64 channels: 784 tiles, so the inference forward, dx and dw
    # take Winograd; the training forward runs the direct kernel
    x, w = np.ones((16, 64, 30, 30), np.float32), np.ones((64, 64, 3, 3), np.float32)
    conv2d_forward(x, w, None, keep_cache=False)
    out, cache = conv2d_forward(x, w, None)
    assert cache.plan.names() == {"forward": "direct", "input_grad": "winograd4",
                                  "weight_grad": "winograd4"}, cache.plan
    conv2d_backward(out, cache)
    t2 = time.perf_counter()
    out, cache = conv2d_forward(x, w[:, :1], None, groups=64)
    conv2d_backward(out, cache)
    t3 = time.perf_counter()
    print(f"import {t1 - t0:.1f} s, first Winograd + direct fwd+bwd {t2 - t1:.1f} s, "
          f"first depthwise fwd+bwd {t3 - t2:.1f} s")


if __name__ == "__main__":
    main()
