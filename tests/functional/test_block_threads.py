"""Blocks on threads (volnet.runtime.block_threads) and the kernels that use them.

A kernel's answer must not depend on how many threads split its blocks beyond float32
rounding: the block sizes follow the thread count (so BLAS sees other matrix widths) and
dw's partial sums are added in another order. References: float64 PyTorch, einsum.
"""

import threading

import numpy as np
import pytest
import torch

from volnet.functional import conv_choice, conv_gemm, weight_cache
from volnet.runtime import backend, block_threads, thread_policy
from volnet.functional.conv import conv2d_backward, conv2d_forward

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


def _blas_threads():
    """Thread counts of NumPy's BLAS (torch's own BLAS, if loaded, is not volnet's)."""
    from threadpoolctl import threadpool_info
    return {i["num_threads"] for i in threadpool_info()
            if i["user_api"] == "blas" and "numpy" in i["filepath"]}


def test_run_returns_in_order_on_distinct_threads_with_one_blas_thread():
    before = _blas_threads()
    seen = {}
    together = threading.Barrier(3)

    def work(i):
        together.wait(timeout=30)          # all three blocks run at the same time
        seen[i] = (threading.get_ident(), _blas_threads())
        return i * i

    assert block_threads.run(work, 3) == [0, 1, 4]
    assert len({ident for ident, _ in seen.values()}) == 3
    assert all(blas <= {1} for _, blas in seen.values())
    assert _blas_threads() == before                  # restored afterwards
    assert block_threads.run(lambda i: i + 7, 1) == [7]


def test_run_waits_for_every_block_then_raises():
    done = []

    def work(i):
        if i == 0:
            raise ValueError("block 0 failed")
        done.append(i)

    with pytest.raises(ValueError, match="block 0 failed"):
        block_threads.run(work, 3)
    assert sorted(done) == [1, 2]


def test_scratch_is_per_thread_and_reused():
    a = block_threads.scratch("test", 100)
    b = block_threads.scratch("test", 50)
    assert b.base is a.base or np.shares_memory(a, b)       # reused, not reallocated
    assert block_threads.scratch("test", 1000).size == 1000  # grows
    assert block_threads.scratch("test", 10, np.float64).dtype == np.float64
    other = []
    t = threading.Thread(target=lambda: other.append(block_threads.scratch("test", 1000)))
    t.start()
    t.join()
    assert not np.shares_memory(other[0], block_threads.scratch("test", 1000))


def _address(a):
    return a.__array_interface__["data"][0]


def test_scratch_names_share_buffers_that_no_array_refers_to():
    """A name without a buffer of its size takes over another name's once no view of it is
    alive, never while one is (the kernel using it may still be running), and fits any
    dtype; a name still gets its own buffer back while its earlier view is alive."""
    block_threads.release_scratch()
    a = block_threads.scratch("share-a", 1000)
    a[:] = 1.0
    b = block_threads.scratch("share-b", 500)          # a is alive: b gets its own
    assert not np.shares_memory(a, b)
    again = block_threads.scratch("share-a", 1000)     # same name: same buffer, as before
    assert np.shares_memory(a, again)
    where = _address(a)
    del a, again
    c = block_threads.scratch("share-c", 10, np.float64)   # takes a's (b's is alive)
    assert _address(c) == where and c.dtype == np.float64 and c.shape == (10,)
    c[:] = 2.0
    assert not np.shares_memory(c, b)
    d = block_threads.scratch("share-d", 2000)          # none free is large enough: new
    assert not np.shares_memory(d, c) and not np.shares_memory(d, b)
    del b
    e = block_threads.scratch("share-e", 400)           # the smallest free that fits: b's
    assert not np.shares_memory(e, c) and not np.shares_memory(e, d) and e.size == 400


def test_release_scratch_drops_every_threads_buffers():
    """After release_scratch a thread's next scratch is a new array (the old one, still
    referenced by whoever holds it, keeps its values), on this thread and on another."""
    mine = block_threads.scratch("release", 1 << 16)
    mine[:] = 3.0
    ready, go, seen = threading.Event(), threading.Event(), []

    def other():
        seen.append(block_threads.scratch("release", 1 << 16))
        ready.set()
        go.wait()
        seen.append(block_threads.scratch("release", 1 << 16))

    t = threading.Thread(target=other)
    t.start()
    ready.wait()
    assert block_threads.release_scratch() >= 2 * 4 * (1 << 16)
    go.set()
    t.join()
    assert not np.shares_memory(seen[0], seen[1])
    fresh = block_threads.scratch("release", 1 << 16)
    assert not np.shares_memory(mine, fresh)
    assert (mine == 3.0).all()


def test_workers_is_one_on_the_numpy_path():
    with backend.use_kernels("numpy"):
        assert block_threads.workers() == 1


def _torch64(x, w, dout, padding):
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    out = torch.nn.functional.conv2d(xt, wt, None, 1, padding)
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("shape", [(1, 16, 12, 24), (3, 8, 20, 8), (1, 32, 9, 16)])
def test_winograd_same_on_one_thread_or_two(two_threads, monkeypatch, shape):
    import numba
    n, c, h, f = shape          # batch 1 with few tile rows also splits the filters
    monkeypatch.setattr(conv_choice, "DIRECT", False)
    monkeypatch.setattr(conv_choice, "OUTER", False)    # it would take these maps' dw
    monkeypatch.setattr(conv_choice, "WINOGRAD", True)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES", 1)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 0)
    monkeypatch.setattr(conv_choice, "WINOGRAD_FILTERS_PER_TILE", 1 << 30)
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_TILES_DW", 1)
    rng = np.random.default_rng(h)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((n, f, h, h)).astype(np.float32)
    results = {}
    for threads in (1, two_threads):
        numba.set_num_threads(threads)
        with backend.use_kernels("numba"):
            out, _ = conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1, keep_cache=False)
            _, cache = conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)  # training
            assert cache.plan.weight_grad == "winograd4"
            dx, dw, _ = conv2d_backward(dout, cache)
        results[threads] = out, dx, dw
    (o1, dx1, dw1), (o2, dx2, dw2) = results[1], results[two_threads]
    for one, two in ((o1, o2), (dx1, dx2), (dw1, dw2)):
        np.testing.assert_allclose(one, two, rtol=0, atol=1e-4 * np.abs(one).max())  # F(4x4)
    want = _torch64(x, w, dout, 1)
    for got, exact in zip((o2, dx2, dw2), want):
        assert _rel(got, exact) < 1e-4                  # F(4x4)'s bound, test_compiled_conv.py


def test_filter_transform_and_its_adjoint_match_einsum(two_threads):
    from volnet.functional.compiled import winograd, winograd_filters
    rng = np.random.default_rng(0)
    g = winograd.G
    w = rng.standard_normal((5, 7, 3, 3)).astype(np.float32)
    u = winograd.filter_transform(w)
    want = np.einsum("ki,fcij,lj->klfc", g, w.astype(np.float64), g).reshape(-1, 5, 7)
    np.testing.assert_allclose(u, want, rtol=1e-6, atol=1e-6)
    # dx's transform: the flipped, transposed filters' (C, F) planes, read from w directly
    flipped = w.astype(np.float64)[:, :, ::-1, ::-1]
    want = np.einsum("ki,fcij,lj->klcf", g, flipped, g).reshape(-1, 7, 5)
    np.testing.assert_allclose(winograd.adjoint_filter_transform(w), want, rtol=1e-6, atol=1e-6)
    du = rng.standard_normal((2, 36, 5, 7)).astype(np.float32)
    dw = np.empty((5, 7, 3, 3), np.float32)
    winograd_filters.filter_grads(du, g, dw, 0, 5)
    total = du.astype(np.float64).sum(axis=0).reshape(6, 6, 5, 7)
    np.testing.assert_allclose(dw, np.einsum("ki,klfc,lj->fcij", g, total, g),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [(5, 8, 14, 16, 3, 2, 1), (4, 16, 9, 32, 1, 1, 0),
                                  (3, 4, 11, 8, 3, 1, 1)])
def test_im2col_blocks_on_threads_match_one_thread(two_threads, case):
    import numba
    n, c, h, f, k, s, p = case
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c, k, k)).astype(np.float32)
    ho = (h + 2 * p - k) // s + 1
    dout = rng.standard_normal((n, f, ho, ho)).astype(np.float32)
    runs = []
    for threads in (1, two_threads):
        numba.set_num_threads(threads)
        with backend.use_kernels("numba"):
            out, _ = conv_gemm.forward(x, w, (s, s), (p, p), (1, 1), 1, (ho, ho))
            dw = conv_gemm.weight_grad(x, dout, w.shape, (s, s), (p, p), (1, 1), 1)
        runs.append((out, dw))
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    ref = torch.nn.functional.conv2d(xt, wt, None, s, p)
    ref.backward(torch.tensor(dout, dtype=torch.float64))
    for (out, dw), other in zip(runs, runs[::-1]):
        np.testing.assert_allclose(out, other[0], rtol=1e-5, atol=1e-5)
        assert _rel(out, ref.detach().numpy()) < 1e-5
        assert _rel(dw, wt.grad.numpy()) < 1e-5


@pytest.mark.parametrize("case", [
    # n, c, h, f, groups, padding: 7x7 maps (the wide layout, a thread's samples a column
    # range), 16x16 (per-sample layout), grouped, odd batch
    (4, 24, 7, 20, 1, 1), (3, 8, 16, 12, 1, 0), (5, 12, 7, 8, 2, 1)])
def test_kept_columns_unrolled_on_threads(two_threads, monkeypatch, case):
    """A training forward that keeps its columns cuts the batch over the threads (each
    unrolls and multiplies its samples); the output, and dw from the kept columns, match
    float64 PyTorch and the one-thread run."""
    n, c, h, f, groups, p = case
    monkeypatch.setattr(conv_choice, "DIRECT", False)         # im2col's training forward
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c // groups, 3, 3)).astype(np.float32)
    ho = h + 2 * p - 2
    dout = rng.standard_normal((n, f, ho, ho)).astype(np.float32)
    real_run, counts, runs = block_threads.run, [], []
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    import numba
    for threads in (1, two_threads):
        numba.set_num_threads(threads)
        counts.clear()
        with backend.use_kernels("numba"):
            out, cols = conv_gemm.forward(x, w, (1, 1), (p, p), (1, 1), groups, (ho, ho),
                                          keep_cols=True)
            assert cols is not None                               # kept for backward
            assert counts[0] == threads                   # the batch went on the threads
            dw = conv_gemm.weight_grad(x, dout, w.shape, (1, 1), (p, p), (1, 1), groups, cols)
        runs.append((out, dw))
    xt, wt = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w))
    ref = torch.nn.functional.conv2d(xt, wt, None, 1, p, 1, groups)
    ref.backward(torch.tensor(dout, dtype=torch.float64))
    for out, dw in runs:
        assert _rel(out, ref.detach().numpy()) < 1e-5
        assert _rel(dw, wt.grad.numpy()) < 1e-5
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-5)


def test_kernel_choice_counts_tiles(monkeypatch):
    monkeypatch.setattr(conv_choice, "DIRECT", False)     # Winograd's thresholds against im2col
    monkeypatch.setattr(conv_choice, "OUTER", False)
    assert conv_choice.tiles(1, (56, 56), (1, 1)) == 14 * 14
    assert conv_choice.tiles(2, (7, 7), (1, 1)) == 2 * 2 * 2       # partial tiles count
    assert conv_choice.tiles(1, (56, 56), (2, 2)) == 14 * 14       # two sub-grids of 28 per axis
    assert conv_choice.tiles(1, (5, 5), (2, 2)) == 2 * 2           # sub-grids of 3 and 2
    with backend.use_kernels("numba"):
        def names(n, c, h, training=False):
            return conv_choice.plan((n, c, h, h), (c, c, 3, 3), (1, 1), (1, 1), (1, 1), 1,
                                    (h, h), np.float32, training=training).names()
        few, few_train = names(1, 64, 56), names(1, 64, 28, True)
        below = names(1, 64, 28)
        many = names(16, 64, 56, True)
        mid = names(4, 128, 28, True)
        thin_train = names(1, 64, 56, True)
        tiny = names(1, 64, 14)
        wide_few, wide_some = names(1, 512, 14), names(1, 512, 28)
    # training: dx needs 128 tiles and tiles x channels >= 2^14 (its filter transform is
    # computed every step), dw 512 tiles; the forward stays im2col (faithfulness)
    assert few_train == {"forward": "im2col", "input_grad": "im2col (flipped filters)",
                         "weight_grad": "im2col"}                 # 49 tiles
    assert many == {"forward": "im2col", "input_grad": "winograd4",
                    "weight_grad": "winograd4"}                   # 3136 tiles
    assert mid["input_grad"] == "winograd4" and mid["weight_grad"] == "im2col"   # 196 tiles
    assert thin_train["input_grad"] == "im2col (flipped filters)"  # 196 tiles x 64: too little
    # inference keeps its filter transform: from tiles x channels >= 2^13, and for wide
    # layers tiles >= F x C / 6144 (reading U, 4x the filters, once per call)
    assert few["forward"] == "winograd4"                          # 196 tiles x 64
    assert below["forward"] == "im2col"                           # 49 tiles x 64
    assert tiny["forward"] == "im2col"                            # 16 tiles x 64
    assert wide_few["forward"] == "im2col"                        # 16 tiles, 512 x 512
    assert wide_some["forward"] == "winograd4"                    # 49 tiles, 512 x 512


def test_callers_on_several_threads_finish_and_restore_blas():
    before = _blas_threads()
    barrier = threading.Barrier(2)
    inside, results = [], []

    def caller():
        def work(i):
            if i == 0:
                barrier.wait(timeout=10)         # both callers are inside at the same time
            inside.append(_blas_threads())
            return i
        results.append(block_threads.run(work, 2))   # a failure leaves `results` short

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [[0, 1], [0, 1]] and len(inside) == 4   # no deadlock, every block ran
    assert _blas_threads() == before                 # the last one out restored it
    # nested: a block that runs blocks does them on its own thread
    assert block_threads.run(lambda i: block_threads.run(lambda j: (i, j), 2), 2) == [
        [(0, 0), (0, 1)], [(1, 0), (1, 1)]]


def test_blocks_follow_the_callers_numpy_error_state():
    big = np.full((4, 4), 1e38, np.float32)

    def work(i):
        return big @ big                        # overflows

    with np.errstate(over="ignore"):
        results = block_threads.run(work, 2)    # no warning from either thread
    assert all(np.isinf(r).all() for r in results)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        block_threads.run(work, 2)


def test_a_failed_block_still_lets_the_others_finish_first():
    import time
    finished = []

    def work(i):
        if i == 1:
            raise ValueError("block 1 failed")
        if i == 2:
            time.sleep(0.3)
        finished.append(i)

    with pytest.raises(ValueError, match="block 1 failed"):
        block_threads.run(work, 3)
    assert sorted(finished) == [0, 2]          # block 2 was not left running


def test_blas_count_restored_when_the_last_caller_is_another_thread():
    # the main thread enters first and leaves first; another thread leaves last
    before = _blas_threads()
    entered, release = threading.Event(), threading.Event()

    def other():
        def work(i):
            if i == 0:
                entered.set()
                release.wait(timeout=10)
        block_threads.run(work, 2)

    t = threading.Thread(target=other)

    def main_work(i):
        if i == 0:
            t.start()
            entered.wait(timeout=10)

    block_threads.run(main_work, 2)
    assert _blas_threads() <= {1}              # the other caller is still inside
    release.set()
    t.join(timeout=30)
    assert _blas_threads() == before


def test_kept_columns_are_never_scratch(two_threads, monkeypatch):
    # a small training layer keeps its columns for backward (im2col: the direct kernel,
    # which keeps none, off); a later unrelated forward on the same thread must not
    # overwrite them
    monkeypatch.setattr(conv_choice, "DIRECT", False)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
    with backend.use_kernels("numba"):
        _, cache = conv2d_forward(x, w, None, (1, 1), (1, 1), (1, 1), 1)
        assert cache[1] is not None                               # columns kept
        other = rng.standard_normal((4, 8, 40, 40)).astype(np.float32)
        conv2d_forward(other, w, None, (1, 1), (1, 1), (1, 1), 1, keep_cache=False)
        _, dw, _ = conv2d_backward(dout, cache)
    want = _torch64(x, w, dout, 1)[2]
    assert _rel(dw, want) < 1e-5


def test_training_thread_count_and_block_sections_do_not_undo_each_other():
    # a server thread runs blocks while a training loop sets its own count (use_threads):
    # when both are done, OpenBLAS has the training loop's "outside" count back
    import time

    from volnet.runtime.thread_policy import use_threads

    before = _blas_threads()
    inside, release = threading.Event(), threading.Event()

    def server():
        def work(i):
            if i == 0:
                inside.set()
                release.wait(timeout=10)
        block_threads.run(work, 2)

    def trainer():
        inside.wait(timeout=10)
        with use_threads(2):
            release.set()
            time.sleep(0.1)

    threads = [threading.Thread(target=server), threading.Thread(target=trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert _blas_threads() == before


class _BlasProbe:
    """A leaf layer that records NumPy's BLAS thread count while it runs."""

    def __init__(self):
        import volnet as vn

        seen = self.seen = []

        class Probe(vn.layers.base.Layer):
            def _forward(self, x, training, keep_cache):
                seen.append(("forward", _blas_threads()))
                self._cache = x.shape if keep_cache else None
                return x.copy()

            def _backward(self, dout):
                seen.append(("backward", _blas_threads()))
                return dout.copy()

            def output_shape(self, input_shape):
                return input_shape

        self.layer = Probe()


def test_layers_run_with_one_blas_thread_when_volnet_threads_work(two_threads):
    import volnet as vn
    from volnet.runtime import openblas

    if openblas.blas_threads() is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    probe = _BlasProbe()
    net = vn.Sequential(vn.Flatten(), probe.layer)
    x = np.ones((2, 3, 4, 4), np.float32)
    before = openblas.blas_threads()
    openblas.set_blas_threads(2)
    try:
        with backend.use_kernels("numba"):
            net.forward(x, training=True)
            net.backward(np.ones((2, 48), np.float32))
            assert openblas.blas_threads() == 2           # restored after each outermost call
        with backend.use_kernels("numpy"):                # no volnet threads: OpenBLAS's count
            net.forward(x, training=True)
            net.backward(np.ones((2, 48), np.float32))
    finally:
        openblas.set_blas_threads(before)
    assert probe.seen == [("forward", {1}), ("backward", {1}),
                          ("forward", {2}), ("backward", {2})]


@pytest.mark.parametrize("shapes", [
    ((300, 200), (200, 150)),              # rows
    ((3, 500), (500, 4000)),               # columns
    ((4, 64, 90), (4, 90, 80)),            # batch
    ((2, 64, 90), (90, 700)),              # broadcast b: rows
    ((64, 300), (3, 2, 300, 90)),          # broadcast a over two batch axes: rows
    ((1, 3, 400), (5, 400, 900)),          # batch axis of 1 broadcast: columns
])
def test_matmul_splits_large_products_and_matches_numpy(two_threads, monkeypatch, shapes):
    rng = np.random.default_rng(len(shapes[0]))
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, n, **kw: counts.append(n) or real_run(fn, n, **kw))
    with backend.use_kernels("numba"):
        got = block_threads.matmul(a, b)
        out = np.full(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),
                      np.nan, np.float32)
        block_threads.matmul(a, b, out=out)
        transposed = block_threads.matmul(np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2))
    want = a.astype(np.float64) @ b.astype(np.float64)
    for result in (got, out, np.swapaxes(transposed, -1, -2)):
        np.testing.assert_allclose(result, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert counts == [two_threads] * 3                 # each product went on the threads


def test_matmul_stays_whole_inside_a_block_and_when_small(two_threads, monkeypatch):
    a = np.ones((64, 64), np.float32)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, n, **kw: counts.append(n) or real_run(fn, n, **kw))
    with backend.use_kernels("numba"):
        assert (block_threads.matmul(a, a) == 64).all()           # 262K multiply-adds: whole
        monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
        counts.clear()
        parts = real_run(lambda i: block_threads.matmul(a, a), 2)   # inside blocks: whole
    assert counts == [] and all((p == 64).all() for p in parts)


def test_split_count_splits_smaller_work_only_while_a_block_thread_is_awake(two_threads,
                                                                             monkeypatch):
    """From SPLIT_MIN multiply-adds a product splits over the workers; work whose bits do
    not depend on the split (``same_bits``) also from SPLIT_MIN_AWAKE while a block thread
    spins (a hand-off to it is cheap; waking a sleeping one is not); other work never by
    timing (its sums would change from run to run); below both, and inside a block, it
    stays whole. The real spin: right after a split the helper spins (awake), after
    stop_spinning it sleeps."""
    big, mid, small = block_threads.SPLIT_MIN, block_threads.SPLIT_MIN_AWAKE, 1000
    assert small < mid < big
    with backend.use_kernels("numba"), block_threads.section():
        for awake in (True, False):
            monkeypatch.setattr(block_threads, "awake", lambda awake=awake: awake)
            assert block_threads.split_count(big) == 2
            assert block_threads.split_count(mid, same_bits=True) == (2 if awake else 1)
            assert block_threads.split_count(mid) == 1
            assert block_threads.split_count(small, same_bits=True) == 1
            assert block_threads.run(lambda i: block_threads.split_count(big), 2) == [1, 1]
        monkeypatch.undo()
        monkeypatch.setattr(block_threads, "SPIN_US", 5e5)       # the helper spins 0.5 s
        block_threads.run(lambda i: None, 2)
        assert block_threads.awake() and block_threads.split_count(mid, same_bits=True) == 2
        block_threads.stop_spinning()
        assert not block_threads.awake()
        assert block_threads.split_count(mid, same_bits=True) == 1


def test_a_failing_layer_still_restores_blas(two_threads):
    import volnet as vn
    from volnet.errors import ShapeError
    from volnet.runtime import openblas

    if openblas.blas_threads() is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    before = openblas.blas_threads()
    openblas.set_blas_threads(2)
    net = vn.Sequential(vn.Linear(48, 3, rng=0), vn.Linear(5, 2, rng=0))   # 3 != 5 features
    try:
        with backend.use_kernels("numba"), pytest.raises(ShapeError, match="expected 5 input"):
            net.forward(np.ones((2, 48), np.float32))      # the second layer refuses, inside
        assert openblas.blas_threads() == 2
    finally:
        openblas.set_blas_threads(before)


@pytest.mark.parametrize("case", [(1, 24, 9, 40, 1),      # batch 1: split by filters or pixels
                                  (1, 32, 7, 16, 4),      # grouped, batch 1
                                  (3, 1024, 3, 1024, 1)])  # F x K >= THREAD_BELOW: off blocks
def test_1x1_conv_splits_its_lone_product_over_the_threads(two_threads, monkeypatch, case):
    n, c, h, f, groups = case
    rng = np.random.default_rng(c)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c // groups, 1, 1)).astype(np.float32)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    with backend.use_kernels("numba"):
        out, _ = conv_gemm.forward(x, w, (1, 1), (0, 0), (1, 1), groups, (h, h))
    ref = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                     torch.tensor(w, dtype=torch.float64), groups=groups)
    assert _rel(out, ref.numpy()) < 1e-5
    assert counts == [two_threads]          # the one product went on both threads


def test_1x1_conv_epilogue_on_the_split_channels_matches_torch(two_threads, monkeypatch):
    # batch 1: each thread scales, biases, adds the shortcut and rectifies its own filters
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 24, 9, 9)).astype(np.float32)
    w = rng.standard_normal((37, 24, 1, 1)).astype(np.float32)
    b, scale = (rng.standard_normal(37).astype(np.float32) for _ in range(2))
    residual = rng.standard_normal((1, 37, 9, 9)).astype(np.float32)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
    with backend.use_kernels("numba"):
        out, _ = conv2d_forward(x, w, b, keep_cache=False, relu=True, scale=scale,
                                residual=residual.copy())
    t = torch.nn.functional.conv2d(torch.tensor(x, dtype=torch.float64),
                                   torch.tensor(w, dtype=torch.float64))
    ref = torch.relu(t * torch.tensor(scale, dtype=torch.float64)[:, None, None]
                     + torch.tensor(b, dtype=torch.float64)[:, None, None]
                     + torch.tensor(residual, dtype=torch.float64)).numpy()
    assert _rel(out, ref) < 1e-5
    assert counts == [two_threads]


# ---- the hand-off's contract: persistent threads, failures, concurrent callers, fork ----

def test_calls_reuse_the_same_block_threads():
    together = threading.Barrier(3)

    def work(i):
        together.wait(timeout=30)               # three threads at once, every call
        return threading.get_ident()

    def block_thread_idents():   # only volnet's: other tests' threads may end meanwhile
        return {t.ident for t in threading.enumerate() if t.name.startswith("volnet-block")}

    block_threads.run(work, 3)
    alive = block_thread_idents()
    idents = set()
    for _ in range(30):
        got = block_threads.run(work, 3)
        assert len(set(got)) == 3 and got[0] == threading.get_ident()   # block 0: the caller
        idents.update(got[1:])
    assert block_thread_idents() == alive        # no thread started (or left) per call
    assert idents <= alive
    assert threading.get_ident() not in idents


def test_the_lowest_failing_block_is_raised_and_the_threads_serve_on():
    import time

    def work(i):
        if i == 1:
            time.sleep(0.05)                   # fails after block 3 has
            raise ValueError("block 1 failed")
        if i == 3:
            raise KeyError("block 3 failed")
        return i

    with pytest.raises(ValueError, match="block 1 failed"):
        block_threads.run(work, 4)
    for signal in (KeyboardInterrupt, SystemExit):
        def stop(i, signal=signal):
            if i == 1:
                raise signal()
            return i
        with pytest.raises(signal):
            block_threads.run(stop, 2)
    together = threading.Barrier(2)
    assert block_threads.run(lambda i: together.wait(timeout=30) * 0 + i, 2) == [0, 1]


def test_concurrent_callers_each_get_their_own_results():
    failures, finished = [], []

    def caller(who):
        try:
            for k in range(150):
                count = 2 + k % 3
                got = block_threads.run(lambda i: (who, k, i), count)
                if got != [(who, k, i) for i in range(count)]:
                    failures.append((who, k, got))
            finished.append(who)
        except BaseException as exc:           # reported by the assertion below
            failures.append((who, exc))

    threads = [threading.Thread(target=caller, args=(who,)) for who in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == [] and sorted(finished) == [0, 1, 2, 3]


def test_a_forked_child_runs_its_blocks_on_threads_of_its_own():
    import os
    import select

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    block_threads.run(lambda i: i, 2)            # the parent's block thread exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: its parent's threads are gone
        code = 1
        try:
            together = threading.Barrier(2)
            got = block_threads.run(lambda i: (together.wait(timeout=10), i)[1] * 10, 2)
            os.write(write, repr(got).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 60)
        answer = os.read(read, 100).decode() if ready else "no answer"
    finally:
        os.close(read)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert answer == "[0, 10]"


def test_layers_called_from_two_threads_at_once_give_their_alone_results(two_threads,
                                                                         monkeypatch):
    # a server running two requests at once: each caller's split products (by filters, at
    # batch 1) go on whichever threads are free, or stay on the caller; same blocks either way
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    rng = np.random.default_rng(11)
    cases = [(rng.standard_normal((1, c, h, h)).astype(np.float32),
              rng.standard_normal((f, c, k, k)).astype(np.float32), k // 2)
             for c, h, f, k in ((32, 14, 48, 3), (40, 7, 64, 1))]
    with backend.use_kernels("numba"):
        alone = [conv2d_forward(x, w, None, padding=(p, p), keep_cache=False, relu=True)[0]
                 for x, w, p in cases]
        counts = []
        real_run = block_threads.run
        monkeypatch.setattr(block_threads, "run",
                            lambda fn, k, **kw: counts.append(k) or real_run(fn, k, **kw))
        conv2d_forward(*cases[0][:2], None, padding=(1, 1), keep_cache=False)
        assert counts and max(counts) == two_threads       # the layer does split
        mismatches, done = [], []

        def caller(which):
            x, w, p = cases[which]
            for _ in range(40):
                out = conv2d_forward(x, w, None, padding=(p, p), keep_cache=False, relu=True)[0]
                if not np.array_equal(out, alone[which]):
                    mismatches.append(which)
            done.append(which)

        threads = [threading.Thread(target=caller, args=(i % 2,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert sorted(done) == [0, 0, 1, 1] and mismatches == []
    ref = torch.relu(torch.nn.functional.conv2d(torch.tensor(cases[0][0], dtype=torch.float64),
                                                torch.tensor(cases[0][1], dtype=torch.float64),
                                                padding=1)).numpy()
    assert _rel(alone[0], ref) < 1e-5


def test_workers_are_read_once_per_outermost_layer_call(two_threads):
    """Inside a section (an outermost layer call) the count read on entry is answered; a
    count set inside takes effect at the next section; outside, every read is live."""
    import numba
    backend.numba_module()
    assert block_threads.workers() == 2
    with block_threads.section():
        numba.set_num_threads(1)
        assert block_threads.workers() == 2          # read on entry
        with block_threads.section():                # nested: its own read, then restored
            assert block_threads.workers() == 1
        assert block_threads.workers() == 2
        seen = []

        def other():            # another thread: its own live count, not this section's
            numba.set_num_threads(1)
            seen.append(block_threads.workers())

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert seen == [1]
    assert block_threads.workers() == 1              # outside: live
    with block_threads.section():
        assert block_threads.workers() == 1
    numba.set_num_threads(2)


def test_a_network_run_after_a_thread_change_uses_the_new_count(two_threads, monkeypatch):
    """The per-call read never carries over: a forward at one thread after one at two
    splits nothing (conv_choice's plan is keyed by the count it read)."""
    import numba
    from volnet.layers import Conv2d
    monkeypatch.setattr(conv_choice, "WINOGRAD_MIN_WORK_CACHED", 1 << 11)   # one thread: Winograd
    conv = Conv2d(128, 256, 3, padding=1, rng=0)
    x = np.random.default_rng(0).standard_normal((1, 128, 14, 14)).astype(np.float32)
    def winograd_calls():      # a Winograd inference forward asks for its filter transform
        info = weight_cache.stats()
        return info["hits"] + info["misses"]

    def forward():
        """(output, the plan's kernel, filter transforms asked for) of one forward."""
        calls = winograd_calls()
        out = conv.forward(x)
        kernel = conv_choice.plan(x.shape, conv.params["weight"].shape, (1, 1), (1, 1),
                                  (1, 1), 1, (14, 14), np.float32).forward
        return out, kernel, winograd_calls() - calls

    two, kernel_two, ran_two = forward()
    numba.set_num_threads(1)
    one, kernel_one, ran_one = forward()
    numba.set_num_threads(2)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x).double(),
                                     torch.from_numpy(conv.params["weight"]).double(),
                                     torch.from_numpy(conv.params["bias"]).double(), padding=1)
    np.testing.assert_allclose(one, ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(two, ref.numpy(), rtol=1e-4, atol=1e-4)
    assert (kernel_two, kernel_one) == ("outer", "winograd4")  # split_fits needs 2 threads
    assert (ran_two, ran_one) == (0, 1)             # what each forward ran


@pytest.mark.parametrize("kernel", ["direct", "outer"])
def test_dw_kernels_give_the_same_bits_split_by_the_spin_or_not(two_threads, monkeypatch,
                                                                kernel):
    """The direct and outer kernels' dw sum the batch as two fixed halves added in one order
    (the outer kernel's blocks of 64 filters each over every sample), so they may split by
    timing, whether a block thread happens to spin: a 3->6 5x5 layer and a 6->16 one at
    batch 20, between SPLIT_MIN_AWAKE and SPLIT_MIN multiply-adds, split awake and not
    asleep, with the same bits (before the fixed halves, 142 of the direct dw's 150 values
    of LeNet conv1 differed when it followed the spin)."""
    from volnet.functional.compiled import direct, outer
    rng = np.random.default_rng(0)
    n, c, f, pad = (20, 3, 6, 2) if kernel == "direct" else (20, 6, 16, 0)
    x = rng.standard_normal((n, c, 28, 28)).astype(np.float32)
    size = 28 + 2 * pad - 4
    dout = rng.standard_normal((n, f, size, size)).astype(np.float32)
    macs = dout.size * c * 25
    assert block_threads.SPLIT_MIN_AWAKE <= macs < block_threads.SPLIT_MIN
    run = block_threads.run
    handed = []
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, count, **kw: handed.append(count) or run(fn, count, **kw))
    grad = (direct if kernel == "direct" else outer).weight_grad
    results = []
    with backend.use_kernels("numba"), block_threads.section():
        for awake in (True, False):
            monkeypatch.setattr(block_threads, "awake", lambda awake=awake: awake)
            handed.clear()
            results.append(grad(x, dout, (f, c, 5, 5), (1, 1), (pad, pad), (1, 1), 1))
            assert handed == ([2] if awake else [])
    np.testing.assert_array_equal(results[0], results[1])


def test_direct_passes_of_few_taps_stay_on_the_calling_thread(two_threads, monkeypatch):
    """LeNet conv1 (1 channel, 5x5: 25 taps per filter, below direct.SPLIT_MIN_TAPS) at
    batch 100 (470K output elements, below SPLIT_MIN_TAPS_ELEMENTS): its forward and dw are
    not handed to the block threads however many multiply-adds, and give the bits they give
    split (either rule lowered), both PyTorch's to float32."""
    from volnet.functional.compiled import direct
    rng = np.random.default_rng(3)
    x = rng.standard_normal((100, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((100, 6, 28, 28)).astype(np.float32)
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)       # large enough to split
    run = block_threads.run
    handed = []
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, count, **kw: handed.append(count) or run(fn, count, **kw))
    results = []
    with backend.use_kernels("numba"), block_threads.section():
        for taps, elements in ((direct.SPLIT_MIN_TAPS, direct.SPLIT_MIN_TAPS_ELEMENTS),
                               (1, direct.SPLIT_MIN_TAPS_ELEMENTS), (64, 1000)):
            monkeypatch.setattr(direct, "SPLIT_MIN_TAPS", taps)
            monkeypatch.setattr(direct, "SPLIT_MIN_TAPS_ELEMENTS", elements)
            handed.clear()
            out = direct.forward(x, w, None, (1, 1), (2, 2), (1, 1), 1, (28, 28))
            dw = direct.weight_grad(x, dout, w.shape, (1, 1), (2, 2), (1, 1), 1)
            split = taps <= 25 or elements <= out.size
            assert [k for k in handed if k > 1] == ([2, 2] if split else [])
            results.append((out, dw))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    xt, wt = torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
    want = torch.nn.functional.conv2d(xt, wt, padding=2).numpy()
    grad = torch.nn.grad.conv2d_weight(xt, w.shape, torch.tensor(dout, dtype=torch.float64),
                                       padding=2).numpy()
    assert _rel(results[0][0], want) < 1e-5 and _rel(results[0][1], grad) < 1e-5


def test_matmul_pair_runs_two_balanced_products_side_by_side(two_threads, monkeypatch):
    """A fully connected layer's dw and dx (block_threads.matmul_pair): balanced and large,
    each whole on its own thread (one hand-off of two blocks), each the one-thread product
    bit for bit; unbalanced (over 2x apart) or small, each by matmul in turn."""
    rng = np.random.default_rng(4)
    x, dout = (rng.standard_normal(s).astype(np.float32) for s in ((128, 700), (128, 300)))
    w = rng.standard_normal((300, 700)).astype(np.float32)
    counts = []
    real_run = block_threads.run
    monkeypatch.setattr(block_threads, "run",
                        lambda fn, n, **kw: counts.append(n) or real_run(fn, n, **kw))
    monkeypatch.setattr(block_threads, "SPLIT_MIN", 1)
    with backend.use_kernels("numba"), block_threads.section():
        dw, dx = block_threads.matmul_pair(dout.T, x, dout, w)     # 26.9M each: side by side
        assert counts == [2]
        with thread_policy.use_threads(1):
            np.testing.assert_array_equal(dw, np.matmul(dout.T, x))
            np.testing.assert_array_equal(dx, np.matmul(dout, w))
        counts.clear()
        block_threads.matmul_pair(dout.T, x, dout[:, :100], w[:100])   # 3x apart: in turn
        assert counts == [2, 2]
        counts.clear()
        monkeypatch.setattr(block_threads, "SPLIT_MIN", 1 << 40)      # small: whole, in turn
        small = block_threads.matmul_pair(dout.T, x, dout, w)
        assert counts == []
    np.testing.assert_allclose(small[0], dw, rtol=1e-5, atol=1e-4)
