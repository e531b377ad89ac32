"""Pooling at inference, layer by layer: volnet against onnxruntime on the zoo networks'
pool shapes (benchmarks/README.md section 34).

    python -m benchmarks.pool_peer [--threads 1] [--repeats 30]

Each row is one pool layer at batch 1 (ResNet's stem also at batch 8): volnet's pooling
function as a layer inside a network runs it at inference (no cache; a lone layer's
``forward`` also checks its input for NaN, ~0.15 ms on 64x112x112) against an onnxruntime session of that one node
(``intra_op_num_threads`` = ``--threads``), run in a child process of its own (its worker
threads spin between calls, benchmarks/onnx_peer.py). Best wall-clock time of
``--repeats`` calls, in ms; the child's includes the session's call overhead (~10 us).
Both outputs are compared (NaN-free random input).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from volnet.functional.pool import avgpool2d_forward, maxpool2d_forward
from volnet.runtime import thread_policy

# (name, op, input shape, kernel, stride, padding, ceil_mode, count_include_pad)
ROWS = [
    ("ResNet stem 3x3/2 p1", "MaxPool", (1, 64, 112, 112), 3, 2, 1, False, True),
    ("ResNet stem 3x3/2 p1 b8", "MaxPool", (8, 64, 112, 112), 3, 2, 1, False, True),
    ("GoogLeNet pool1 3x3/2 ceil", "MaxPool", (1, 64, 112, 112), 3, 2, 0, True, True),
    ("GoogLeNet pool2 3x3/2 ceil", "MaxPool", (1, 192, 56, 56), 3, 2, 0, True, True),
    ("GoogLeNet pool3 3x3/2 ceil", "MaxPool", (1, 480, 28, 28), 3, 2, 0, True, True),
    ("GoogLeNet pool4 2x2/2 ceil", "MaxPool", (1, 832, 14, 14), 2, 2, 0, True, True),
    ("GoogLeNet 3a 3x3/1 p1", "MaxPool", (1, 192, 28, 28), 3, 1, 1, True, True),
    ("GoogLeNet 4b 3x3/1 p1", "MaxPool", (1, 512, 14, 14), 3, 1, 1, True, True),
    ("GoogLeNet 5a 3x3/1 p1", "MaxPool", (1, 832, 7, 7), 3, 1, 1, True, True),
    ("VGG 2x2/2", "MaxPool", (1, 64, 224, 224), 2, 2, 0, False, True),
    ("AlexNet 3x3/2", "MaxPool", (1, 64, 55, 55), 3, 2, 0, False, True),
    ("Inception-v4 A avg 3x3/1 p1", "AveragePool", (1, 384, 35, 35), 3, 1, 1, False, False),
    ("Inception-v4 B avg 3x3/1 p1", "AveragePool", (1, 1024, 17, 17), 3, 1, 1, False, False),
    ("avg 2x2/2", "AveragePool", (1, 64, 112, 112), 2, 2, 0, False, True),
]

_CHILD = r"""
import json, sys, time
import numpy as np
import onnx, onnxruntime as ort
from onnx import TensorProto, helper
rows, threads, repeats, out_path = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
best, outs = [], []
for name, op, shape, k, s, p, ceil, include in rows:
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=int(ceil))
    if op == "AveragePool":
        attrs["count_include_pad"] = int(include)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outs.append(sess.run(None, {"x": x})[0])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    best.append(min(times))
np.savez(out_path, *outs)
print(json.dumps(best))
"""


def onnxruntime_rows(threads: int, repeats: int) -> tuple[list[float], list[np.ndarray]]:
    """Best seconds per row and the outputs, from a child process."""
    with tempfile.TemporaryDirectory(prefix="volnet-bench-pool-") as tmp:
        out = os.path.join(tmp, "outs.npz")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(ROWS), str(threads),
                                 str(repeats), out], capture_output=True, text=True, env=env,
                                check=True)
        with np.load(out) as saved:
            outs = [saved[f"arr_{i}"] for i in range(len(ROWS))]
    return json.loads(result.stdout.splitlines()[-1]), outs


def volnet_rows(repeats: int) -> tuple[list[float], list[np.ndarray]]:
    """Best seconds per row of volnet's pooling at inference, and the outputs."""
    best, outs = [], []
    for _, op, shape, k, s, p, ceil, include in ROWS:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        window = ((k, k), (s, s), (p, p), ceil)

        def run(x=x, window=window, op=op, include=include):
            if op == "MaxPool":
                return maxpool2d_forward(x, *window, keep_cache=False)[0]
            return avgpool2d_forward(x, *window, include, keep_cache=False)[0]

        outs.append(run())
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        best.append(min(times))
    return best, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f} at start")
    with thread_policy.use_threads(args.threads):
        ours, our_outs = volnet_rows(args.repeats)
    theirs, their_outs = onnxruntime_rows(args.threads, args.repeats)
    print(f"{'layer':34s} {'shape':>18s} {'volnet ms':>10s} {'onnxruntime ms':>15s} {'ratio':>6s}")
    for row, a, b, mine, other in zip(ROWS, ours, theirs, our_outs, their_outs):
        if not np.allclose(mine, other, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"{row[0]}: volnet and onnxruntime differ")
        shape = "x".join(map(str, row[2]))
        print(f"{row[0]:34s} {shape:>18s} {a * 1e3:10.3f} {b * 1e3:15.3f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
