"""The start-up targets of the speed issue, each command in fresh processes, wall clock.

* the first ``volnet train lenet5`` of a fresh install (an empty numba cache folder, so every
  kernel it runs compiles), then the same command again (kernels loaded from the cache);
* ``volnet predict CHECKPOINT digit.png`` on one image, against ``VOLNET_KERNELS=numpy``
  (best of ``--rounds``, the two alternated);
* ``vn.io.load_onnx`` of volnet's ResNet-50 export against onnxruntime's ``InferenceSession``
  on the same file, each timed inside its own fresh process around the one call (best of
  ``--rounds``, alternated; imports not counted on either side: ``onnx`` for volnet,
  ``onnxruntime`` for its session).

Run on an idle machine: ``python -m benchmarks.startup [--json PATH]`` (about a minute and a
half). Nothing is written outside a temporary folder (the numba cache of the first two runs
included).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD_VOLNET = """
import sys, time
import onnx  # noqa: F401 (imported on both sides before the clock starts, as onnxruntime is)
import volnet as vn
t = time.perf_counter(); vn.io.load_onnx(sys.argv[1]); print(time.perf_counter() - t)
"""
LOAD_ORT = """
import sys, time
import onnxruntime as ort
t = time.perf_counter(); ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(time.perf_counter() - t)
"""


def _wall(cmd, env, cwd) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _inner(code, path, env) -> float:
    out = subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _digit_png(folder: Path) -> Path:
    """One test digit from the bundled MNIST sample, as a PNG (white ink on black)."""
    import numpy as np
    from PIL import Image

    sample = Path(__file__).resolve().parents[1] / "volnet" / "data" / "mnist_sample"
    with gzip.open(sample / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(16 + 784), np.uint8)[16:].reshape(28, 28)
    path = folder / "digit.png"
    Image.fromarray(pixels).save(path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    record = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["NUMBA_CACHE_DIR"] = str(tmp / "numba")           # a fresh install's empty cache
        train = ["volnet", "train", "lenet5", "--overwrite"]
        record["train_first_s"] = _wall(train + ["--out", str(tmp / "first.safetensors")],
                                        env, tmp)
        record["train_cached_s"] = _wall(train + ["--out", str(tmp / "ck.safetensors")],
                                         env, tmp)
        digit = _digit_png(tmp)
        predict = ["volnet", "predict", str(tmp / "ck.safetensors"), str(digit)]
        numpy_env = {**env, "VOLNET_KERNELS": "numpy"}
        auto, plain = [], []
        for _ in range(args.rounds):
            auto.append(_wall(predict, env, tmp))
            plain.append(_wall(predict, numpy_env, tmp))
        record["predict_s"], record["predict_numpy_s"] = min(auto), min(plain)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime missing: pip install -e '.[dev]' for the load_onnx row")
        else:
            import volnet as vn
            import volnet.models as zoo

            model = tmp / "resnet50.onnx"
            vn.io.export_onnx(zoo.build("resnet50"), model, (3, 224, 224))
            ours, theirs = [], []
            for _ in range(args.rounds):
                ours.append(_inner(LOAD_VOLNET, model, env))
                theirs.append(_inner(LOAD_ORT, model, env))
            record["load_onnx_s"], record["ort_session_s"] = min(ours), min(theirs)
    print(f"first volnet train lenet5 (empty numba cache): {record['train_first_s']:.1f} s "
          f"(target <= 20 s); again, cached: {record['train_cached_s']:.1f} s")
    print(f"volnet predict, one digit: {record['predict_s']:.2f} s, VOLNET_KERNELS=numpy "
          f"{record['predict_numpy_s']:.2f} s: ratio "
          f"{record['predict_s'] / record['predict_numpy_s']:.2f} (target <= 1.2)")
    if "load_onnx_s" in record:
        print(f"load_onnx ResNet-50: {record['load_onnx_s']:.3f} s, onnxruntime session "
              f"{record['ort_session_s']:.3f} s: ratio "
              f"{record['load_onnx_s'] / record['ort_session_s']:.2f} (target <= 2.0)")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
