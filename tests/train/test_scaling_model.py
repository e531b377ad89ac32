"""The scaling model of benchmarks/scaling_model.py against hand-computed schedules and fits."""

import numpy as np
import pytest

from benchmarks import scaling_model as sm


def _probes(alpha, beta, gbit):
    """Probe records as benchmarks.cluster writes them, timed exactly by the ring model."""
    return [{"ranks": w, "gbit": gbit,
             "probe": [{"bytes": n, "seconds": 2 * (w - 1) * alpha + 2 * (w - 1) / w * n * beta}
                       for n in (4096, 65536, 2 ** 20, 2 ** 24)]} for w in (2, 4)]


def test_alpha_beta_fit_recovers_the_ring_parameters():
    alpha, beta = 60e-6, 8 / (0.9 * 1e9)          # 60 us, 90% of 1 Gbit/s
    fit = sm.fit_alpha_beta(_probes(alpha, beta, 1.0) + _probes(1.0, 1.0, 10.0), 1.0)
    assert fit["alpha_s"] == pytest.approx(alpha, rel=1e-6)
    assert fit["beta_s_per_byte"] == pytest.approx(beta, rel=1e-6)
    assert fit["eta"] == pytest.approx(0.9, rel=1e-6)
    assert fit["points"] == 4      # per rank count: 4 kB (alpha) and 16 MB; not 64 kB, 1 MB
    # no latency at all: never a negative alpha, whatever the rounding
    zero = sm.fit_alpha_beta(_probes(0.0, beta, 1.0), 1.0)
    assert zero["alpha_s"] >= 0 and zero["beta_s_per_byte"] == pytest.approx(beta, rel=1e-6)
    with pytest.raises(SystemExit, match="no probes at 25 Gbit/s"):
        sm.fit_alpha_beta(_probes(alpha, beta, 1.0), 25.0)


def test_ring_time_by_hand():
    # 8 nodes, 1e8 bytes, 10 Gbit/s at eta 0.5, alpha 1 ms: 14 ms + 2*7/8*1e8*8/5e9 s
    assert sm.ring_seconds(1e8, 8, 1e-3, 10.0, 0.5) == pytest.approx(0.014 + 0.28)
    assert sm.ring_seconds(1e8, 1, 1e-3, 10.0, 0.5) == 0


def test_schedule_overlaps_the_first_bucket_with_the_rest_of_backward():
    # two layers: 3e7 bytes ready 0.5 s into backward (a bucket of its own: over 25 MB),
    # 1e7 bytes at the end (2 s); 1e9 bytes/s, no latency; on 2 nodes a ring moves n bytes
    prof = {"forward_s": 1.0, "backward_s": 2.0, "ready_s": [0.5, 2.0], "bytes": [3e7, 1e7]}
    link = {"alpha_s": 0.0, "eta": 1.0}
    step, wait = sm.step_seconds(prof, 2, link, gbit=8.0)
    assert step == pytest.approx(1.0 + 2.0 + 0.01) and wait == pytest.approx(0.01)
    step, wait = sm.step_seconds(prof, 2, link, gbit=8.0, overlap=False)
    assert step == pytest.approx(1.0 + 2.0 + 0.03 + 0.01) and wait == pytest.approx(0.04)
    # a bucket that cannot start before the previous one is done queues behind it
    slow = {"alpha_s": 0.0, "eta": 0.01}                  # 1e7 bytes/s: 3 s for the first
    step, _ = sm.step_seconds(prof, 2, slow, gbit=8.0)
    assert step == pytest.approx(1.0 + 0.5 + 3.0 + 1.0)
    # half the compute (a faster node): the same transfers hide less
    step, wait = sm.step_seconds(prof, 2, slow, gbit=8.0, scale=0.5)
    assert step == pytest.approx(0.5 + 0.25 + 3.0 + 1.0)


def test_readme_blocks_are_replaced_and_missing_ones_named():
    text = "a\n<!-- x:begin -->\nold\n<!-- x:end -->\nb"
    assert sm._replace(text, "x", "new") == "a\n<!-- x:begin -->\nnew\n<!-- x:end -->\nb"
    with pytest.raises(SystemExit, match="y:begin"):
        sm._replace(text, "y", "new")


def test_profile_reports_every_gradient_once_in_backward_order():
    from volnet.models.registry import build

    prof = sm.profile("resnet18", size=32, batch=2, repeats=1)
    assert prof["gradient_bytes"] == 4 * build("resnet18", num_classes=1000).num_params()
    assert np.all(np.diff(prof["ready_s"]) >= 0) and prof["ready_s"][-1] <= prof["backward_s"]
    assert prof["bytes"][0] == 4 * (512 * 1000 + 1000)   # the classifier is ready first
