"""Worker for tests/train/test_distributed.py, launched as ``mpiexec -n W python dp_worker.py``.

Trains a tiny conv net data-parallel with volnet's pieces (BatchIterator shards,
GradientAllreducer, optional sync BN) and plain SGD, and saves each rank's
weights. ``train`` with a world of one is the single-process reference.

Usage:
    dp_worker.py equiv OUT_DIR {none,sync,local} STEPS GLOBAL_BATCH BUCKET_MB [OVERLAP]
    dp_worker.py trainer OUT_PATH STOP_AT RESUME_FROM|- [ACCUMULATE]
    dp_worker.py evaluate OUT_DIR
    dp_worker.py imagefolder FOLDER OUT_DIR
    dp_worker.py fail {kill,hang,raise}
"""

import json
import os
import signal
import sys
import time

import numpy as np

import volnet as vn
from volnet.data.batches import BatchIterator
from volnet.io.checkpoint import resume, save
from volnet.train import SGD, Trainer
from volnet.train.allreduce import GradientAllreducer, broadcast_model
from volnet.train.communicator import MPICommunicator, abort_on_error, get_communicator
from volnet.train.data_parallel import data_parallel, local_batch_size
from volnet.train.sync_bn import convert_sync_batchnorm


def build_net(bn: bool, seed: int = 0) -> vn.Sequential:
    rng = np.random.default_rng(seed)
    layers = [vn.Conv2d(2, 4, 3, padding=1, rng=rng)]
    layers += [vn.BatchNorm2d(4)] if bn else []
    layers += [vn.ReLU(), vn.MaxPool2d(2), vn.Flatten(), vn.Linear(4 * 4 * 4, 3, rng=rng)]
    return vn.Sequential(*layers)


def make_data(n: int = 48, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 2, 8, 8), dtype=np.uint8), rng.integers(0, 3, size=n)


def train(comm, bn: str, steps: int, global_batch: int, bucket_mb: float = 25.0, lr: float = 0.5,
          overlap: bool = True):
    """``steps`` SGD steps on global batches of ``global_batch``; returns (net, reducer).

    ``bn``: "none" (no batch norm), "sync" (synchronised) or "local"; ``overlap``:
    start buckets during backward.
    """
    net = build_net(bn != "none", seed=comm.rank)   # different on each rank: broadcast fixes it
    if bn == "sync" and comm.world_size > 1:
        convert_sync_batchnorm(net, comm)
    broadcast_model(net, comm)
    x, y = make_data()
    batches = BatchIterator(x, y, batch_size=local_batch_size(global_batch, comm.world_size),
                            seed=3, shard=(comm.rank, comm.world_size))
    reducer = GradientAllreducer(comm, bucket_mb=bucket_mb, net=net, overlap=overlap)
    step, epoch = 0, 0
    while step < steps:
        for xb, yb in batches.batches(epoch):
            if step == steps:
                break
            _, dscores = vn.softmax_cross_entropy(net.forward(xb, training=True), yb)
            net.backward(dscores)
            reducer(net)
            for _, param, grad in net.named_params():
                param -= lr * grad
            step += 1
        epoch += 1
    return net, reducer


class StopAt:
    """Callback: stop after ``step`` updates (mid-epoch when it does not divide the epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer, logs) -> None:
        if trainer.step == self.step:
            trainer.stop()


def train_with_trainer(comm, out_path: str, stop_at: int, resume_from: str | None,
                       epochs: int = 2, global_batch: int = 8, accumulate: int = 1):
    """The Trainer on 48 examples with momentum SGD; rank 0 saves a checkpoint at the end.

    ``accumulate``: micro-batches per local batch (gradient accumulation)."""
    net = build_net(bn=False)
    hook = data_parallel(net, comm)
    x, y = make_data()
    batches = BatchIterator(x, y, batch_size=local_batch_size(global_batch, comm.world_size),
                            seed=3, shard=(comm.rank, comm.world_size))
    trainer = Trainer(net, SGD(lr=0.2, momentum=0.9), grad_hook=hook, is_main=comm.is_main,
                      progress=False, callbacks=[StopAt(stop_at)] if stop_at else [],
                      accumulate=accumulate)
    if resume_from:
        resume(trainer, resume_from)   # every rank reads the same file: identical replicas
    trainer.fit(batches, epochs=epochs)
    if comm.is_main:
        save(out_path, net, trainer)
    return trainer


def evaluate_split(comm) -> dict:
    """Held-out metrics of a batch-norm net on 37 examples (uneven over 2 or 3 ranks)."""
    from volnet.train.evaluation import evaluate

    net = build_net(True)
    x, y = make_data(n=37, seed=4)
    return evaluate(net, x.astype(np.float32) / 255, y, batch_size=5, comm=comm)


def image_net() -> vn.Sequential:
    """3 classes from 3-channel images of any size."""
    return vn.Sequential(vn.Conv2d(3, 3, 3, padding=1, rng=np.random.default_rng(0)),
                         vn.GlobalAvgPool2d(), vn.Flatten())


def read_image_folder_shards(comm, folder: str) -> dict:
    """Which files this rank decodes for the statistics, one epoch of its shard (batches of
    2) and its slice of the held-out set; the statistics and held-out metrics it gets."""
    from volnet.data import image_files
    from volnet.data.registry import load_dataset
    from volnet.train.evaluation import evaluate

    decoded, log = image_files.load_image, []
    image_files.load_image = lambda path, shape: (log.append(path), decoded(path, shape))[1]
    phases = {}
    data = load_dataset(folder, (3, 8, 8), lazy=True, comm=comm)
    phases["stats"], log[:] = list(log), []
    batches = BatchIterator(data.x_train, data.y_train, 2, seed=3, mean=data.mean, std=data.std,
                            shard=(comm.rank, comm.world_size))
    for _ in batches.batches(0):
        pass
    phases["epoch"], log[:] = list(log), []
    result = evaluate(image_net(), batches.transform_lazily(data.x_test), data.y_test,
                      batch_size=2, comm=comm)
    phases["test"] = list(log)
    return {**phases, "mean": data.mean, "std": data.std, "loss": result["loss"],
            "accuracy": result["accuracy"], "predictions": result["predictions"].tolist(),
            "paths": data.x_train.paths, "test_paths": data.x_test.paths}


def main(argv: list[str]) -> None:
    comm = get_communicator(distributed=True)
    with abort_on_error(comm):
        if argv[0] == "equiv":
            out, bn, steps, batch, bucket_mb = argv[1], argv[2], *map(float, argv[3:6])
            overlap = argv[6] != "0" if len(argv) > 6 else True
            net, reducer = train(comm, bn, int(steps), int(batch), bucket_mb, overlap=overlap)
            np.savez(os.path.join(out, f"rank{comm.rank}.npz"), **net.state_dict())
            with open(os.path.join(out, f"rank{comm.rank}.json"), "w") as f:
                json.dump({"collectives": reducer.collectives, "steps": reducer.steps,
                           "buckets": len(reducer.buckets), "early": reducer.early}, f)
        elif argv[0] == "trainer":
            resume_from = None if argv[3] == "-" else argv[3]
            accumulate = int(argv[4]) if len(argv) > 4 else 1
            train_with_trainer(comm, argv[1], int(argv[2]), resume_from, accumulate=accumulate)
        elif argv[0] == "evaluate":
            result = evaluate_split(comm)
            np.savez(os.path.join(argv[1], f"eval{comm.rank}.npz"), **result)
        elif argv[0] == "imagefolder":
            with open(os.path.join(argv[2], f"files{comm.rank}.json"), "w") as f:
                json.dump(read_image_folder_shards(comm, argv[1]), f)
        elif argv[0] == "fail":
            MPICommunicator(timeout=120).barrier()   # start together: a slow import is no hang
            fail(comm, argv[1])


def fail(comm, mode: str) -> None:
    """Rank 1 dies, hangs or raises at step 2 of an allreduce loop; rank 0 carries on."""
    net = build_net(False)
    reducer = GradientAllreducer(comm)
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    for step in range(10_000):
        if comm.rank == 1 and step == 2:
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif mode == "hang":
                time.sleep(600)
            elif mode == "raise":
                raise ValueError("simulated failure in the training step")
        _, dscores = vn.softmax_cross_entropy(net.forward(x, training=True), np.array([0, 1]))
        net.backward(dscores)
        reducer(net)
    print(f"rank {comm.rank}: finished without noticing the failure", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
