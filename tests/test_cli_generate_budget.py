"""`volnet generate` checks --n against the memory budget with what it really allocates: the
estimate it checks is at least the peak Python-side allocation of the run (tracemalloc)."""

import tracemalloc

import pytest

import volnet.limits
from volnet.cli import main


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    from volnet.train.generative import train_generative

    out = tmp_path_factory.mktemp("gan") / "gan.safetensors"
    train_generative("dcgan", epochs=1, batch_size=32, limit=64, progress=False, out=str(out),
                     log=lambda *a: None)
    return out


def run(gan, tmp_path, monkeypatch, n, npy):
    estimates = []
    real = volnet.limits.check_budget

    def spy(nbytes, *args, **kwargs):
        estimates.append(nbytes)
        return real(nbytes, *args, **kwargs)

    monkeypatch.setattr(volnet.limits, "check_budget", spy)
    args = ["generate", str(gan), "--n", str(n), "--out", str(tmp_path / f"g{n}.png")]
    if npy:
        args += ["--npy", str(tmp_path / f"g{n}")]
    tracemalloc.start()
    try:
        assert main(args) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return max(estimates), peak


@pytest.mark.parametrize("npy", [False, True])
def test_generate_estimate_grows_with_n_as_the_peak_does(gan, tmp_path, monkeypatch, npy):
    """Per extra digit (the decoder's one-batch activations cancel out between two --n of
    several batches), the estimate must grow at least as fast as the measured peak: else a
    large --n passes the check and then exceeds the budget (--n 200000: 2.3 GB against 2 GiB)."""
    e1, p1 = run(gan, tmp_path, monkeypatch, 3000, npy)
    e2, p2 = run(gan, tmp_path, monkeypatch, 15000, npy)
    per_digit_estimate, per_digit_peak = (e2 - e1) / 12000, (p2 - p1) / 12000
    assert per_digit_peak <= per_digit_estimate, (per_digit_peak, per_digit_estimate)
