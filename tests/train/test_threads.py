"""BLAS thread control used by `volnet train`."""

import numpy as np

from volnet.train.threads import blas_threads, default_threads, set_blas_threads


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


def test_default_respects_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert default_threads() is None
