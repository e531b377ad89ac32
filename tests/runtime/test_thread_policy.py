"""BLAS thread control used by `volnet train`."""

import os

import numpy as np

from volnet.runtime.openblas import blas_threads, set_blas_threads


def test_set_blas_threads_roundtrip_and_results_unchanged():
    before = blas_threads()
    if before is None:                                  # no OpenBLAS in this NumPy build
        assert set_blas_threads(1) is False
        return
    a = np.random.default_rng(0).standard_normal((300, 300))
    try:
        assert set_blas_threads(1) and blas_threads() == 1
        one = a @ a
        assert set_blas_threads(2) and blas_threads() == 2
        np.testing.assert_allclose(a @ a, one, rtol=1e-12, atol=1e-12)
    finally:
        set_blas_threads(before)


def test_user_count_wins_then_idle_cores(monkeypatch):
    from volnet.runtime import thread_policy as threads

    assert 0.0 <= threads.idle_cores(0.01) <= (os.cpu_count() or 1) + 1e-9
    monkeypatch.setenv("VOLNET_THREADS", "3")
    assert threads.choose_threads() == 3
    monkeypatch.delenv("VOLNET_THREADS")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "idle_cores", lambda: 0.1)     # another process holds the cores
    assert threads.choose_threads() == 1
    monkeypatch.setattr(threads, "idle_cores", lambda: 64.0)    # never more than this process's cores
    assert threads.choose_threads() == threads.cpu_count()
    threads.pin_threads(2)
    try:
        assert threads.choose_threads() == 2
    finally:
        threads.pin_threads(None)


def test_use_threads_sets_blas_and_numba_and_restores():
    import numba
    from threadpoolctl import threadpool_info

    from volnet.runtime.thread_policy import use_threads

    def blas():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before, numba_before = blas(), numba.get_num_threads()
    with use_threads(1):
        assert blas() == {1} and numba.get_num_threads() == 1
    assert blas() == before and numba.get_num_threads() == numba_before


def test_fit_trains_with_the_chosen_thread_count(monkeypatch):
    from threadpoolctl import threadpool_info

    import volnet as vn
    from volnet.runtime import thread_policy as threads
    from volnet.train import LambdaCallback

    seen = []
    monkeypatch.setattr(threads, "choose_threads", lambda: 1)
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 32)
    net = vn.Sequential(vn.Flatten(), vn.Linear(64, 3, rng=0))
    record = LambdaCallback(on_batch_end=lambda t, logs: seen.append(
        {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
    vn.fit(net, x, y, epochs=1, batch_size=16, callbacks=[record], progress=False)
    assert seen and all(s == {1} for s in seen)


def test_numba_takes_the_users_thread_count_when_it_loads():
    # benchmarks/__main__.py and users set OMP_NUM_THREADS before import: volnet's own threads
    # (numba's, the block threads) follow it, as OpenBLAS does
    import subprocess
    import sys

    code = ("from volnet.runtime import backend, block_threads\n"
            "backend.numba_module()\n"
            "print(block_threads.workers(), backend.numba_module().get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in (
        "VOLNET_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VOLNET_KERNELS")}
    one = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=120, check=False)
    assert one.stdout.split() == ["1", "1"], one.stderr
    every = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    import numba
    assert every.stdout.split() == [str(numba.config.NUMBA_NUM_THREADS)] * 2, every.stderr
