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
    # 16 maps of 28x28 outputs, 32 channels: 784 tiles, so fwd, dx and dw take Winograd
    x, w = np.ones((16, 32, 30, 30), np.float32), np.ones((32, 32, 3, 3), np.float32)
    out, cache = conv2d_forward(x, w, None)
    assert cache[-1] == "winograd4", cache[-1]
    conv2d_backward(out, cache)
    t2 = time.perf_counter()
    out, cache = conv2d_forward(x, w[:, :1], None, groups=32)
    conv2d_backward(out, cache)
    t3 = time.perf_counter()
    print(f"import {t1 - t0:.1f} s, first Winograd fwd+bwd {t2 - t1:.1f} s, "
          f"first depthwise fwd+bwd {t3 - t2:.1f} s")


if __name__ == "__main__":
    main()
