"""onnxruntime as a peer on the inference rows: volnet's own ONNX export, timed in a process
of its own.

What a user deploying a CNN on a CPU picks: ``vn.io.export_onnx`` of the same network,
an ``InferenceSession`` with default options except ``intra_op_num_threads`` (the
suite's thread count, as volnet and PyTorch get). It runs in a separate Python process:
onnxruntime's worker threads spin between calls, and interleaved in one process they made
the other two libraries ~10x slower (issue 21). The child process times repeated calls
with the suite's idle gap before each (benchmarks/timing.py) and returns the median, the
spread and its scores, which are checked against volnet's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import volnet as vn

_CHILD = r"""
import json, statistics, sys, time
import numpy as np
import onnxruntime as ort
model, data, threads, repeats, gap, out_path = sys.argv[1:]
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
start = time.perf_counter()
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
session_s = time.perf_counter() - start
x = np.load(data)
name = sess.get_inputs()[0].name
scores = sess.run(None, {name: x})[0]
samples = []
for _ in range(int(repeats)):
    time.sleep(float(gap))
    t0 = time.perf_counter()
    sess.run(None, {name: x})
    samples.append(time.perf_counter() - t0)
np.save(out_path, scores)
print(json.dumps({"median": statistics.median(samples), "samples": samples,
                  "session_s": session_s, "version": ort.__version__}))
"""


def time_onnxruntime(net, x: np.ndarray, threads: int, repeats: int, gap_s: float) -> dict:
    """{"median", "samples", "session_s", "version", "max_rel_err"}: onnxruntime on ``net``'s
    export, in a child process, scores compared with ``net.forward(x)``."""
    with tempfile.TemporaryDirectory(prefix="volnet-bench-onnx-") as tmp:
        model, data, out = (os.path.join(tmp, n) for n in ("net.onnx", "x.npy", "scores.npy"))
        vn.io.export_onnx(net, model, tuple(x.shape[1:]))
        np.save(data, x)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        result = subprocess.run([sys.executable, "-c", _CHILD, model, data, str(threads),
                                 str(repeats), str(gap_s), out],
                                capture_output=True, text=True, env=env, check=True)
        record = json.loads(result.stdout.strip().splitlines()[-1])
        want = net.forward(x)
        got = np.load(out)
    record["max_rel_err"] = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
    return record


_PROFILE_CHILD = r"""
import collections, json, sys
import numpy as np
import onnxruntime as ort
model, data, threads, repeats, prefix = sys.argv[1:]
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(threads)
opts.enable_profiling = True
opts.profile_file_prefix = prefix
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
x = np.load(data)
name = sess.get_inputs()[0].name
for _ in range(3):
    sess.run(None, {name: x})
runs = 3 + int(repeats)
for _ in range(int(repeats)):
    sess.run(None, {name: x})
events = json.load(open(sess.end_profiling()))
spent, order = collections.defaultdict(float), {}
for e in events:
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        node = e["name"][:-len("_kernel_time")]
        spent[node] += e["dur"]
        args = e.get("args", {})
        shapes = [list(v.values())[0] for v in args.get("input_type_shape", [])]
        order.setdefault(node, (len(order), args.get("op_name", "?"), shapes))
rows = [(order[n][0], order[n][1], order[n][2], spent[n] / runs / 1e3) for n in order]
print(json.dumps([r[1:] for r in sorted(rows)]))
"""


def node_times(net, x: np.ndarray, threads: int, repeats: int) -> list:
    """[(op name, [input shapes], ms per run), ...] of onnxruntime's nodes on ``net``'s export
    in execution order (its own profiler, in a child process; after graph optimisation, so
    a Conv node holds the batch norm, ReLU and residual sum it fused)."""
    with tempfile.TemporaryDirectory(prefix="volnet-bench-onnx-") as tmp:
        model, data = os.path.join(tmp, "net.onnx"), os.path.join(tmp, "x.npy")
        vn.io.export_onnx(net, model, tuple(x.shape[1:]))
        np.save(data, x)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        result = subprocess.run([sys.executable, "-c", _PROFILE_CHILD, model, data,
                                 str(threads), str(repeats), os.path.join(tmp, "profile")],
                                capture_output=True, text=True, env=env, check=True)
    return [tuple(row) for row in json.loads(result.stdout.strip().splitlines()[-1])]
