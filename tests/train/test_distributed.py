"""Data-parallel training over MPI: real 2-rank runs under mpiexec, plus the single-process parts.

The multi-process tests launch ``tests/train/mpi_scripts/dp_worker.py`` with
``mpiexec -n 2`` in a subprocess with a timeout; the reference is the same
training loop run in this process as a world of one with the global batch.
"""

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import volnet as vn
from volnet.errors import ConfigError, VolnetError
from volnet.layers import hooks
from volnet.train.allreduce import GradientAllreducer
from volnet.train.communicator import (
    LAUNCHER_VARS,
    Communicator,
    DistributedError,
    abort_on_error,
    get_communicator,
    mpi_available,
)
from volnet.train.data_parallel import local_batch_size
from volnet.train.sync_bn import SyncBatchNorm2d, convert_sync_batchnorm, revert_sync_batchnorm

WORKER = pathlib.Path(__file__).with_name("mpi_scripts") / "dp_worker.py"
MPIEXEC = shutil.which("mpiexec", path=str(pathlib.Path(sys.executable).parent)) \
    or shutil.which("mpiexec")


def _load_worker():
    spec = importlib.util.spec_from_file_location("dp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def mpirun(nprocs: int, *args: str, timeout: float = 120, program=(str(WORKER),), **env: str):
    """Run the worker (or ``program``) under mpiexec; returns (returncode, output, seconds)."""
    environ = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **env)
    start = time.monotonic()
    proc = subprocess.Popen([MPIEXEC, "-n", str(nprocs), sys.executable, *program, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environ, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # the launcher and every rank it started
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec -n {nprocs} {' '.join(args)} still running after {timeout} s:\n{out}")
    return proc.returncode, out, time.monotonic() - start


# ---- two ranks reproduce one process --------------------------------------------------------

@pytest.mark.parametrize("bn, bucket_mb, overlap", [
    ("none", "25", "1"), ("sync", "25", "1"), ("none", "0.0005", "1"), ("sync", "0.0002", "1"),
    ("none", "0.0005", "0")],
    ids=["no-bn", "sync-bn", "many-buckets", "many-buckets-sync-bn", "no-overlap"])
def test_two_ranks_match_one_process_with_the_global_batch(tmp_path, bn, bucket_mb, overlap):
    steps, global_batch = 5, 8
    ranks, stats = _run_equiv(tmp_path, bn, steps, global_batch, bucket_mb, overlap)
    reference, _ = worker.train(Communicator(), bn, steps, global_batch)
    initial = worker.build_net(bn != "none").state_dict()
    for key, want in reference.state_dict().items():
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)   # in lockstep
        np.testing.assert_allclose(ranks[0][key], want, rtol=2e-5, atol=2e-6, err_msg=key)
    assert not np.allclose(reference.state_dict()["0.weight"], initial["0.weight"])
    # one allreduce per bucket per step, never one per parameter
    assert stats[0]["steps"] == steps
    assert stats[0]["collectives"] == steps * stats[0]["buckets"]
    grad_buckets = stats[0]["buckets"] - (bn != "none")   # the running statistics: one more
    # by hand: 131 floats per 0.0005 MB bucket, 52 per 0.0002 MB; a parameter never splits.
    # Overlap orders by readiness (5.weight 192 | 5.bias 3, [1.weight 4, 1.bias 4,] 0.weight 72
    # ...), without it in parameter order (0.weight 72, 0.bias 4 | 5.weight 192 | 5.bias 3)
    assert grad_buckets == {"25": 1, "0.0005": 2 if overlap == "1" else 3, "0.0002": 4}[bucket_mb]
    # with overlap, from the second step on every gradient bucket left during backward
    assert stats[0]["early"] == (steps - 1) * grad_buckets * (overlap == "1")


def test_local_batch_norm_keeps_replicas_identical(tmp_path):
    ranks, _ = _run_equiv(tmp_path, "local", 5, 8, "25")
    reference, _ = worker.train(Communicator(), "local", 5, 8)
    for key in reference.state_dict():   # running statistics averaged: replicas agree
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    # local statistics are not the global batch's: the run differs from one process
    assert not np.allclose(ranks[0]["1.running_var"], reference.state_dict()["1.running_var"],
                           rtol=1e-3)


def _run_equiv(tmp_path, bn, steps, global_batch, bucket_mb, overlap="1"):
    code, out, _ = mpirun(2, "equiv", str(tmp_path), bn, str(steps), str(global_batch), bucket_mb,
                          overlap)
    assert code == 0, out
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1)]
    stats = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, stats


# ---- shards ---------------------------------------------------------------------------------------

def _epoch_labels(n, world, epoch, local_batch, skip=0):
    """Per rank, the labels (= example indices) it reads in ``epoch`` after ``skip`` examples."""
    from volnet.data.batches import BatchIterator

    x = np.zeros((n, 1, 1, 1), np.uint8)
    return [[yb for _, yb in BatchIterator(x, np.arange(n), local_batch, seed=5,
                                           shard=(rank, world)).batches(epoch, skip)]
            for rank in range(world)]


@pytest.mark.parametrize("n, world", [(48, 2), (48, 3), (50, 4), (7, 2)])
def test_shards_are_disjoint_cover_the_epoch_and_keep_ranks_in_step(n, world):
    for epoch in (0, 1):
        per_rank = _epoch_labels(n, world, epoch, local_batch=4)
        seen = np.concatenate([np.concatenate(batches) for batches in per_rank])
        assert set(seen.tolist()) == set(range(n))                     # covering
        assert len(seen) == n + (-n) % world                            # padding only to W
        if n % world == 0:
            assert len(np.unique(seen)) == len(seen)                    # disjoint
        assert len({len(batches) for batches in per_rank}) == 1         # same number of steps
    assert not np.array_equal(_epoch_labels(n, 1, 0, n)[0][0], _epoch_labels(n, 1, 1, n)[0][0])


def test_ranks_together_read_what_one_process_reads_even_after_resuming():
    one = _epoch_labels(48, 1, epoch=2, local_batch=12)[0]
    for world in (2, 3, 4):
        ranks = _epoch_labels(48, world, epoch=2, local_batch=12 // world)
        for step, batch in enumerate(one):      # global batch t = union of local batches t
            assert sorted(np.concatenate([r[step] for r in ranks])) == sorted(batch)
        resumed = _epoch_labels(48, world, epoch=2, local_batch=12 // world, skip=24)
        for step, batch in enumerate(one[2:]):   # continuing mid-epoch on another rank count
            assert sorted(np.concatenate([r[step] for r in resumed])) == sorted(batch)


# ---- checkpoints resume on another number of ranks ---------------------------------------------

def test_resume_on_a_different_number_of_ranks_continues_the_run(tmp_path):
    from volnet.io.checkpoint import load_checkpoint

    one = Communicator()
    full = worker.train_with_trainer(one, str(tmp_path / "full.safetensors"), 0, None)
    assert full.step == 12                                        # 2 epochs of 48 / 8

    # 2 ranks stop mid-epoch 2 (step 7 of 12); one process finishes the run
    code, out, _ = mpirun(2, "trainer", str(tmp_path / "two.safetensors"), "7", "-")
    assert code == 0, out
    assert load_checkpoint(tmp_path / "two.safetensors").trainer_state["step"] == 7
    resumed = worker.train_with_trainer(one, str(tmp_path / "end1.safetensors"), 0,
                                        str(tmp_path / "two.safetensors"))
    # one process stops at step 3; 2 ranks finish the run
    worker.train_with_trainer(one, str(tmp_path / "one.safetensors"), 3, None)
    code, out, _ = mpirun(2, "trainer", str(tmp_path / "end2.safetensors"), "0",
                          str(tmp_path / "one.safetensors"))
    assert code == 0, out
    finished = load_checkpoint(tmp_path / "end2.safetensors")

    assert resumed.step == finished.trainer_state["step"] == 12
    for key, want in full.net.state_dict().items():
        np.testing.assert_allclose(resumed.net.state_dict()[key], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(finished.net.state_dict()[key], want, rtol=1e-5, atol=1e-6)


# ---- held-out evaluation split over the ranks ----------------------------------------------------

@pytest.mark.parametrize("ranks", [2, 3])
def test_evaluation_split_over_ranks_equals_one_process(tmp_path, ranks):
    code, out, _ = mpirun(ranks, "evaluate", str(tmp_path))
    assert code == 0, out
    want = worker.evaluate_split(Communicator())
    assert 0 < want["accuracy"] < 1
    for rank in range(ranks):   # every rank gets the whole set's metrics
        got = np.load(tmp_path / f"eval{rank}.npz")
        np.testing.assert_array_equal(got["predictions"], want["predictions"])
        assert float(got["accuracy"]) == want["accuracy"]
        np.testing.assert_allclose(float(got["loss"]), want["loss"], rtol=1e-6)


def _image_folder(root: pathlib.Path) -> pathlib.Path:
    from PIL import Image

    rng = np.random.default_rng(7)
    for split, per_class in (("train", 6), ("test", 3)):
        for label in ("ant", "bee", "cat"):
            (root / split / label).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    return root


def test_ranks_decode_only_their_shards_files_of_an_image_folder(tmp_path):
    from volnet.data.batches import BatchIterator
    from volnet.data.registry import load_dataset
    from volnet.train.evaluation import evaluate

    folder = _image_folder(tmp_path / "images")
    out = tmp_path / "out"
    out.mkdir()
    code, log, _ = mpirun(2, "imagefolder", str(folder), str(out))
    assert code == 0, log
    ranks = [json.loads((out / f"files{r}.json").read_text()) for r in (0, 1)]
    eager = load_dataset(str(folder), (3, 8, 8))             # one process, every file decoded
    paths, test_paths = ranks[0]["paths"], ranks[0]["test_paths"]
    assert len(paths) == 18 and len(test_paths) == 9
    x = np.zeros((18, 1, 1, 1), np.uint8)
    for rank, got in enumerate(ranks):
        shard = BatchIterator(x, np.arange(18), 2, seed=3, shard=(rank, 2)).shard_indices(0)
        assert sorted(got["epoch"]) == sorted(paths[i] for i in shard)    # its shard, once
        assert sorted(got["stats"]) == paths[9 * rank:9 * rank + 9]      # half the statistics
        assert got["test"] == test_paths[rank * 9 // 2:(rank + 1) * 9 // 2]   # its slice
        np.testing.assert_allclose(got["mean"], eager.mean, atol=1e-4)
        np.testing.assert_allclose(got["std"], eager.std, atol=1e-4)
    batches = BatchIterator(eager.x_train, eager.y_train, 2, mean=ranks[0]["mean"],
                            std=ranks[0]["std"])
    want = evaluate(worker.image_net(), batches.transform(eager.x_test), eager.y_test)
    assert ranks[0]["predictions"] == ranks[1]["predictions"] == want["predictions"].tolist()
    assert ranks[0]["accuracy"] == want["accuracy"]
    np.testing.assert_allclose(ranks[1]["loss"], want["loss"], rtol=1e-6)


# ---- the volnet train command ------------------------------------------------------------------

def _tiny_mnist(folder: pathlib.Path) -> pathlib.Path:
    from volnet.data.datasets import load_mnist_sample
    from volnet.data.idx import write_idx

    data = load_mnist_sample()
    folder.mkdir()
    for split, x, y, n in (("train", data.x_train, data.y_train, 256),
                           ("t10k", data.x_test, data.y_test, 64)):
        write_idx(folder / f"{split}-images-idx3-ubyte", x[:n, 0])
        write_idx(folder / f"{split}-labels-idx1-ubyte", y[:n].astype(np.uint8))
    return folder


def test_volnet_train_under_mpiexec_matches_one_process(tmp_path):
    from volnet.cli import main
    from volnet.io.checkpoint import load

    data = str(_tiny_mnist(tmp_path / "mnist"))
    common = ["train", "lenet5", "--data", data, "--epochs", "2", "--batch-size", "32", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "one.safetensors")]) == 0
    runs = tmp_path / "runs"
    runs.mkdir()
    code, out, _ = mpirun(2, *common, "--sync-bn", "--accumulate", "2", "--out",
                          str(runs / "two.safetensors"),
                          program=("-m", "volnet"))
    assert code == 0, out
    assert out.count("checkpoint saved to") == 1 and "over 2 MPI ranks" in out   # rank 0 talks
    assert sorted(p.name for p in runs.iterdir()) == ["two.safetensors"]          # and writes
    one, two = load(tmp_path / "one.safetensors"), load(runs / "two.safetensors")
    for key, want in one.state_dict().items():
        np.testing.assert_allclose(two.state_dict()[key], want, rtol=1e-4, atol=1e-5, err_msg=key)


def test_volnet_train_distributed_without_mpi_says_how_to_install(monkeypatch, capsys):
    from volnet.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert main(["train", "lenet5", "--distributed", "--epochs", "1"]) == 2
    err = capsys.readouterr().err     # issue 15 item 8: the line that works from a checkout too
    assert "pip install 'volnet[mpi]'" in err and "pip install '.[mpi]'" in err


def test_volnet_train_under_mpiexec_refuses_a_bad_global_batch_with_exit_code_2(tmp_path):
    # the same code as the command in one process (2: bad settings), not MPI_Abort's generic 1
    code, out, _ = mpirun(2, "train", "lenet5", "--batch-size", "3", "--epochs", "1",
                          "--out", str(tmp_path / "never.safetensors"), program=("-m", "volnet"))
    assert code == 2, out
    assert "batch size 3 is the global batch and must be a multiple of the 2 ranks" in out
    assert not (tmp_path / "never.safetensors").exists()


# ---- a failing rank takes the others down -------------------------------------------------------

@pytest.mark.parametrize("mode, message", [
    ("kill", "BAD TERMINATION"),                                          # launcher notices
    ("hang", "did not complete within 2 s"),                              # our deadline
    ("raise", "rank 1 of 2 failed with ValueError: simulated failure"),   # abort_on_error
])
def test_failed_rank_stops_every_rank_with_a_clear_error(mode, message):
    code, out, seconds = mpirun(2, "fail", mode, timeout=90, VOLNET_MPI_TIMEOUT="2")
    assert code != 0, out
    assert message in out
    assert "finished without noticing" not in out
    assert seconds < 60, f"took {seconds:.0f} s to notice"


# ---- single-process parts --------------------------------------------------------------------

def test_world_of_one_without_mpi_and_the_install_hint(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    assert get_communicator().world_size == 1          # not launched by MPI
    monkeypatch.setitem(sys.modules, "mpi4py", None)         # as if mpi4py were not installed
    assert not mpi_available()
    assert get_communicator().world_size == 1
    with pytest.raises(ConfigError, match=r"pip install 'volnet\[mpi\]'.*pip install '\.\[mpi\]'"):
        get_communicator(distributed=True)


class TwoIdenticalRanks(Communicator):
    """Pretends a second rank holds the same arrays: a sum doubles them; records every start.

    The doubling happens at the start, as a real allreduce may complete at once;
    ``started`` logs (step, size) of each allreduce, ``during_backward`` whether a
    backward pass was still running then (``net._in_backward`` set by the test).
    """

    world_size = 2

    def __init__(self, other_layout=None):
        self.started, self.other_layout, self.step = [], other_layout, 0

    def start_allreduce_(self, array):
        self.started.append((self.step, array.size))
        array *= 2

    def broadcast_json(self, value, root=0):
        return value if self.other_layout is None else self.other_layout


def _net_with_grads(rng, dtype=np.float32):
    net = worker.build_net(True).astype(dtype)
    x = rng.standard_normal((4, 2, 8, 8)).astype(dtype)
    net.forward(x, training=True)
    net.backward(rng.standard_normal((4, 3)).astype(dtype))
    return net


def test_allreducer_buckets_and_averages_in_place(rng):
    net = _net_with_grads(rng)
    before = {name: grad.copy() for name, _, grad in net.named_params()}
    sizes = [g.size for g in before.values()]
    comm = TwoIdenticalRanks()
    reducer = GradientAllreducer(comm, bucket_mb=4 * 200 / 2 ** 20)   # 200 floats a bucket
    reducer(net)
    comm.step = 1
    reducer(net)
    for name, _, grad in net.named_params():   # mean of two equal copies: unchanged
        np.testing.assert_array_equal(grad, before[name])
    per_step = [[size for step, size in comm.started if step == s] for s in (0, 1)]
    assert per_step[0] == per_step[1]                           # same buckets every step
    assert sum(per_step[0]) == sum(sizes)                       # every gradient element, once
    assert 1 < len(per_step[0]) < len(sizes)                    # fewer calls than parameters
    assert reducer.bytes_per_step == 4 * sum(sizes)
    assert reducer.collectives == 2 * len(per_step[0])


def test_allreducer_refuses_ranks_with_different_networks(rng):
    net = _net_with_grads(rng)
    reducer = GradientAllreducer(TwoIdenticalRanks(other_layout=[["0.weight", [1], "<f4"]]))
    with pytest.raises(DistributedError, match="differ from rank 0"):
        reducer(net)
    assert isinstance(DistributedError("x"), VolnetError)


def test_global_batch_must_split_evenly():
    assert local_batch_size(64, 4) == 16
    with pytest.raises(ConfigError, match="multiple of the 3 ranks"):
        local_batch_size(64, 3)


def test_abort_on_error_in_a_world_of_one_just_raises():
    with pytest.raises(ValueError, match="boom"):
        with abort_on_error(Communicator()):
            raise ValueError("boom")


def test_sync_batchnorm_alone_equals_batchnorm_and_converts_back(rng):
    plain = worker.build_net(True).astype(np.float64)
    synced = convert_sync_batchnorm(plain.copy(), Communicator())
    assert isinstance(synced[1], SyncBatchNorm2d) and isinstance(synced[1], vn.BatchNorm2d)
    x = rng.standard_normal((3, 2, 8, 8)) * 2 + 1
    dout = rng.standard_normal((3, 3))
    np.testing.assert_allclose(synced.forward(x, training=True), plain.forward(x, training=True),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(synced.backward(dout), plain.backward(dout), rtol=1e-10, atol=1e-12)
    for (name, _, g_sync), (_, _, g_plain) in zip(synced.named_params(), plain.named_params()):
        np.testing.assert_allclose(g_sync, g_plain, rtol=1e-10, atol=1e-12, err_msg=name)
    for key, value in plain.state_dict().items():
        np.testing.assert_allclose(synced.state_dict()[key], value, rtol=1e-12, err_msg=key)
    revert_sync_batchnorm(synced)
    assert type(synced[1]) is vn.BatchNorm2d and "comm" not in vars(synced[1])


def test_checkpoint_of_a_sync_bn_net_loads_as_plain_batch_norm(tmp_path, rng):
    from volnet.io.checkpoint import load, save

    plain = worker.build_net(True)
    synced = convert_sync_batchnorm(plain.copy(), Communicator())
    loaded = load(save(tmp_path / "sync.safetensors", synced))   # no communicator inside
    x = rng.standard_normal((3, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.forward(x, training=True), plain.forward(x, training=True),
                               rtol=1e-6, atol=1e-6)
    dout = rng.standard_normal((3, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.backward(dout), plain.backward(dout), rtol=1e-5, atol=1e-6)



# ---- overlap: buckets leave during backward, with exactly the finished gradients ------------

class SnapshotRanks(Communicator):
    """Two ranks whose other one holds ``other`` times our gradients.

    An allreduce reads its buffer when it starts (MPI may read it any time until
    it completes, so the copy taken at the start is what a real peer could get):
    a bucket started before all its gradients were copied in gives a wrong sum.
    ``log`` records, per start, how many layers had finished backward by then.
    """

    world_size = 2

    def __init__(self, other=3.0):
        self.other, self.finished, self.log = other, 0, []

    def start_allreduce_(self, array):
        self.log.append(self.finished)
        return array, array.copy()

    def test(self, requests):
        return True

    def wait(self, requests, what="allreduce"):
        for request in requests:
            if request is not None:
                array, sent = request
                array[...] = sent * (1 + self.other)


def _grads(net):
    return {name: grad.copy() for name, _, grad in net.named_params(trainable_only=True)}


class SkippingBranch(vn.Sequential):
    """A network that, every other step, fills its first layer's gradients without that
    layer's ``backward`` (so without its hook), as a custom container or plan might."""

    calls = 0

    def _backward_params(self, dout):
        type(self).calls += 1
        steps = self._cache
        for layer, relu in reversed(steps[1:]):
            dout = self._step_backward(layer, relu, dout)
        first = steps[0][0]
        if type(self).calls % 2:
            first.backward(dout, input_grad=False)
        else:
            first._backward_params(dout)   # new gradient arrays, and no hook


@pytest.mark.parametrize("bn", ["none", "sync"])
def test_overlapped_buckets_start_during_backward_and_average_exactly(rng, bn):
    net = worker.build_net(bn == "sync", seed=0)
    comm = SnapshotRanks()
    if bn == "sync":
        convert_sync_batchnorm(net, Communicator())   # the layer that replaces its grads arrays
    net.freeze("0.bias")                              # frozen: never sent, never changed
    with hooks.register_backward_hook(lambda *a: setattr(comm, "finished", comm.finished + 1)):
        reducer = GradientAllreducer(comm, bucket_mb=4 * 60 / 2 ** 20, net=net)
        for step in range(4):
            comm.finished, first = 0, len(comm.log)
            x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
            net.forward(x, training=True)
            net.backward(rng.standard_normal((4, 3)).astype(np.float32), input_grad=False)
            own, frozen = _grads(net), net[0].grads["bias"].copy()
            reducer([(n, g) for n, _, g in net.named_params(trainable_only=True)])
            for name, grad in _grads(net).items():   # (own + 3 own) / 2 = 2 own
                np.testing.assert_allclose(grad, 2 * own[name], rtol=1e-6, err_msg=name)
            np.testing.assert_array_equal(net[0].grads["bias"], frozen)   # frozen: not sent
            layers = len(list(net.named_layers()))
            started = comm.log[first:]
            if step == 0:    # the first step learns the order: everything after backward
                assert all(n == layers for n in started)
            else:            # the last layer's bucket left before the first layer's backward
                assert started[0] == 1 and min(started) < layers - 1
    assert len(comm.log) == 4 * len(reducer.buckets)   # each bucket once a step, none resent
    assert reducer.early > 0


def test_skipped_backward_and_replaced_grads_are_sent_after_backward(rng):
    net = SkippingBranch(*[c for _, c in worker.build_net(False, seed=0).named_children()])
    comm = SnapshotRanks()
    reducer = GradientAllreducer(comm, bucket_mb=4 * 60 / 2 ** 20, net=net)
    for _ in range(4):
        net.forward(rng.standard_normal((4, 2, 8, 8)).astype(np.float32), training=True)
        net.backward(rng.standard_normal((4, 3)).astype(np.float32), input_grad=False)
        own = _grads(net)
        reducer(net)
        for name, grad in _grads(net).items():   # (own + 3 own) / 2 = 2 own
            np.testing.assert_allclose(grad, 2 * own[name], rtol=1e-6, err_msg=name)


def test_gradients_rewritten_after_their_bucket_left_are_sent_again(rng):
    net = worker.build_net(False, seed=0)
    comm = SnapshotRanks()
    reducer = GradientAllreducer(comm, bucket_mb=4 * 60 / 2 ** 20, net=net)
    for step in range(3):
        net.forward(rng.standard_normal((4, 2, 8, 8)).astype(np.float32), training=True)
        net.backward(rng.standard_normal((4, 3)).astype(np.float32), input_grad=False)
        net[-1].forward(rng.standard_normal((4, 64)).astype(np.float32), training=True)
        net[-1].backward(rng.standard_normal((4, 3)).astype(np.float32))   # rewrites its grads
        own = _grads(net)
        reducer(net)
        for name, grad in _grads(net).items():   # (own + 3 own) / 2 = 2 own
            np.testing.assert_allclose(grad, 2 * own[name], rtol=1e-6, err_msg=name)


def test_no_sync_holds_the_sends_and_close_detaches(rng):
    net = worker.build_net(False, seed=0)
    comm = SnapshotRanks(other=1.0)
    reducer = GradientAllreducer(comm, bucket_mb=4 * 60 / 2 ** 20, net=net)
    x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
    for _ in range(2):
        net.forward(x, training=True)
        with reducer.no_sync():
            net.backward(np.ones((4, 3), np.float32), input_grad=False)
        count = len(comm.log)
        net.forward(x, training=True)
        net.backward(np.ones((4, 3), np.float32), input_grad=False, accumulate=True)
        reducer(net)
    assert reducer.collectives == len(comm.log) and count < len(comm.log)
    reducer.close()
    net.forward(x, training=True)
    net.backward(np.ones((4, 3), np.float32))
    assert len(comm.log) == reducer.collectives   # no hook left: nothing started


def test_accumulating_micro_batches_equals_the_whole_batch(tmp_path):
    whole = worker.train_with_trainer(Communicator(), str(tmp_path / "a.safetensors"), 0, None)
    parts = worker.train_with_trainer(Communicator(), str(tmp_path / "b.safetensors"), 0, None,
                                      accumulate=4)
    assert parts.step == whole.step == 12
    for key, want in whole.net.state_dict().items():
        np.testing.assert_allclose(parts.net.state_dict()[key], want, rtol=1e-5, atol=1e-6)
    # batches of 8 in micro-batches of 3, 3 and 2: each weighted by its share
    uneven = worker.train_with_trainer(Communicator(), str(tmp_path / "c.safetensors"), 0, None,
                                       accumulate=3)
    for key, want in whole.net.state_dict().items():
        np.testing.assert_allclose(uneven.net.state_dict()[key], want, rtol=1e-5, atol=1e-6)


def test_two_ranks_accumulating_match_one_process(tmp_path):
    from volnet.io.checkpoint import load

    one = worker.train_with_trainer(Communicator(), str(tmp_path / "one.safetensors"), 0, None)
    code, out, _ = mpirun(2, "trainer", str(tmp_path / "two.safetensors"), "0", "-", "2")
    assert code == 0, out
    two = load(tmp_path / "two.safetensors")
    for key, want in one.net.state_dict().items():
        np.testing.assert_allclose(two.state_dict()[key], want, rtol=1e-5, atol=1e-6, err_msg=key)


# ---- across simulated machines: one network namespace per rank ----------------------------------

def _cluster_or_skip():
    from benchmarks import cluster

    problem = cluster.requirements()
    if problem:
        pytest.skip(f"the simulated cluster needs {problem}")
    return cluster


def test_two_ranks_in_two_namespaces_train_over_the_shaped_link(tmp_path):
    cluster = _cluster_or_skip()
    steps = 2
    with cluster.Cluster(2, gbit=1) as machines:
        names = set(machines.names)
        assert names <= set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                           text=True).stdout.split())
        before = machines.bytes_sent()
        out = machines.mpiexec(2, [sys.executable, "-m", "benchmarks.cluster", "--worker",
                                   "--model", "cifar_example", "--steps", str(steps),
                                   "--warmup", "0", "--batch", "4"], timeout=120)
        moved = [b - a for a, b in zip(before, machines.bytes_sent())]
        record = json.loads(out.strip().splitlines()[-1])
        # the host's own view: each rank sent at least its share of every ring allreduce
        # (2 ranks: the whole gradient once per step) through its shaped link, not memory
        assert record["ranks"] == 2 and record["bytes_per_step"] == 4 * record["params"]
        assert min(moved) >= steps * record["bytes_per_step"]
        # the launcher enters only this cluster's hosts
        refused = subprocess.run([machines.launcher, "-x", "127.0.0.1", "true"],
                                 capture_output=True, text=True)
        assert refused.returncode != 0 and "not a host of this simulated cluster" in refused.stderr
        with pytest.raises(RuntimeError, match="failed"):
            machines.mpiexec(2, [sys.executable, "-c", "raise SystemExit(3)"], timeout=60)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not names & set(left.split())                      # removed, even after a failure
    assert machines.bridge not in subprocess.run(["ip", "link", "show"], capture_output=True,
                                                 text=True).stdout


def test_cluster_says_what_it_needs_without_root(monkeypatch):
    from benchmarks import cluster

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)
    problem = cluster.requirements()
    assert "root" in problem and "`ip`" in problem and "`tc`" in problem and "mpiexec" in problem
    with pytest.raises(cluster.ClusterUnavailable, match="needs root"):
        cluster.Cluster(2, gbit=1)
    assert cluster.main(["--ranks", "2"]) == 2


def test_generative_models_refuse_accumulate_and_no_overlap(capsys):
    from volnet.cli import main

    assert main(["train", "vae", "--accumulate", "2", "--epochs", "1"]) == 2
    assert "drop --accumulate and --no-overlap" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:   # argparse refuses it by the option's name
        main(["train", "lenet5", "--accumulate", "0"])
    assert stop.value.code == 2 and "--accumulate must be at least 1" in capsys.readouterr().err
