"""Data-parallel scaling over MPI: images/s for 1, 2, ... processes and the cost of the allreduce.

Weak scaling, as Horovod reports it: every process trains the lecture's CIFAR-10
net (``volnet.models.cifar_example``) on its own batch of ``--batch`` images per
step, so P processes train on a global batch of P x batch. Each configuration
runs under ``mpiexec -n P`` with ``--threads`` BLAS threads per process (1 by
default, so P processes use P cores and the comparison is fair).

Reported per configuration: images/s over all processes, milliseconds per step,
the time per step spent in the gradient allreduce (packing, reduction and any
waiting for the slowest rank), and a bare allreduce of the same bytes timed
alone (the pure communication cost).

Usage:
    python -m benchmarks.scaling                  # 1 and 2 processes, best of 3 runs each
    python -m benchmarks.scaling --procs 1 2 4 --batch 64 --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to run")
    parser.add_argument("--batch", type=int, default=64, help="images per process per step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (after 5 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads per process")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per process count, interleaved; the fastest is kept "
                             "(other load on a shared machine only ever slows a run down)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args) -> None:
    """One rank: time training steps and a bare allreduce; rank 0 prints one JSON line."""
    import volnet as vn
    from volnet.data.batches import BatchIterator
    from volnet.models import cifar_example
    from volnet.train.allreduce import GradientAllreducer, broadcast_model
    from volnet.train.communicator import get_communicator
    from volnet.train.optim import SGD

    comm = get_communicator(distributed=True)
    net = cifar_example()
    broadcast_model(net, comm)
    rng = np.random.default_rng(0)
    n = args.batch * comm.world_size * 8
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    batches = BatchIterator(x, rng.integers(0, 10, size=n), batch_size=args.batch,
                            shard=(comm.rank, comm.world_size))
    reducer = GradientAllreducer(comm, net=net)   # overlapped, as volnet train runs it
    optimizer = SGD(lr=0.01, momentum=0.9)

    def step(xb, yb):
        _, dscores = vn.softmax_cross_entropy(net.forward(xb, training=True), yb)
        net.backward(dscores)
        reducer(net)
        named = list(net.named_params(trainable_only=True))
        optimizer.step({k: p for k, p, _ in named}, {k: g for k, _, g in named})

    data = [b for epoch in range(2) for b in batches.batches(epoch)]
    for i in range(5):
        step(*data[i % len(data)])
    comm.barrier()
    reducer.seconds, reducer.steps = 0.0, 0
    start = time.perf_counter()
    for i in range(args.steps):
        step(*data[i % len(data)])
    comm.barrier()
    elapsed = time.perf_counter() - start
    bare = _bare_allreduce(comm, reducer)
    if comm.rank == 0:
        print(json.dumps({
            "procs": comm.world_size, "batch": args.batch, "threads": args.threads,
            "images_per_s": comm.world_size * args.batch * args.steps / elapsed,
            "step_ms": 1e3 * elapsed / args.steps,
            "allreduce_in_step_ms": 1e3 * reducer.seconds / max(reducer.steps, 1),
            "bare_allreduce_ms": bare, "bytes_per_step": reducer.bytes_per_step,
            "buckets": len(reducer.buckets)}), flush=True)


def _bare_allreduce(comm, reducer, repeats: int = 200) -> float:
    """Milliseconds for one allreduce of the gradient buckets, all ranks already in step."""
    if comm.world_size == 1:
        return 0.0
    buffers = [np.ones_like(bucket.buf) for bucket in reducer.buckets]
    comm.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        comm.allreduce_(buffers)
    return 1e3 * (time.perf_counter() - start) / repeats


def run(args) -> list[dict]:
    """Launch one mpiexec per process count; print and return the results."""
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install volnet[mpi]")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    best: dict[int, dict] = {}
    for _ in range(args.repeat):
        for procs in args.procs:
            cmd = [mpiexec, "-n", str(procs), sys.executable, "-m", "benchmarks.scaling",
                   "--worker", "--batch", str(args.batch), "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
            if out.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if procs not in best or result["images_per_s"] > best[procs]["images_per_s"]:
                best[procs] = result
    results = [best[p] for p in args.procs]
    _print_table(results, args.repeat)
    return results


def _print_table(results: list[dict], repeat: int) -> None:
    base = results[0]["images_per_s"]
    print(f"cifar_example, {results[0]['batch']} images per process per step, best of "
          f"{repeat} runs, "
          f"{results[0]['threads']} BLAS thread(s) per process, "
          f"{max(r['bytes_per_step'] for r in results) / 1e3:.0f} kB of gradients per step "
          f"per process (in {max(r['buckets'] for r in results)} allreduce call(s))")
    print(f"speed-up relative to {results[0]['procs']} process(es)")
    print(f"{'procs':>5} {'images/s':>9} {'speed-up':>8} {'step ms':>8} "
          f"{'allreduce+wait ms':>17} {'bare allreduce ms':>17}")
    for r in results:
        print(f"{r['procs']:>5} {r['images_per_s']:>9.0f} {r['images_per_s'] / base:>7.2f}x "
              f"{r['step_ms']:>8.1f} {r['allreduce_in_step_ms']:>17.2f} {r['bare_allreduce_ms']:>17.3f}")


def main(argv=None) -> None:
    args = _parse(argv)
    if args.worker:
        worker(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
