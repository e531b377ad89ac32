"""The bounded busy wait of volnet's block threads (volnet.runtime.spin_wait) and the
spin-then-sleep of the block threads built on it (volnet.runtime.block_threads)."""

import threading
import time

import numpy as np
import pytest

from volnet.runtime import backend, block_threads

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="numba missing")


def test_spin_returns_the_value_another_thread_sets():
    from volnet.runtime import spin_wait
    flag = np.zeros(1, np.int64)
    started = threading.Event()

    def setter():
        started.set()
        time.sleep(0.02)
        flag[0] = 7

    thread = threading.Thread(target=setter)
    thread.start()
    started.wait(timeout=30)
    # a minute's limit: only the flag can end this spin in time
    assert spin_wait.spin(flag, 60e6) == 7
    thread.join()


def test_spin_times_out_with_zero_and_leaves_the_flag():
    from volnet.runtime import spin_wait
    flag = np.zeros(1, np.int64)
    start = time.perf_counter()
    assert spin_wait.spin(flag, 2000) == 0           # 2 ms, nobody sets the flag
    assert time.perf_counter() - start >= 0.001      # it did wait (the counter is calibrated)
    assert flag[0] == 0
    flag[0] = 3
    assert spin_wait.spin(flag, 0) == 3               # no spin: the value as it is


@pytest.mark.parametrize("microseconds", [0, 2000])
def test_spin_sets_its_signal_first(microseconds):
    """The signal (the caller's flag, set by a call's last helper) is set before the spin
    waits, and also where there is no spin; the spin itself still watches its own flag."""
    from volnet.runtime import spin_wait
    flag, signal = np.zeros(1, np.int64), np.zeros(1, np.int64)
    assert spin_wait.spin(flag, microseconds, signal, 5) == 0
    assert signal[0] == 5 and flag[0] == 0
    seen = []

    def watcher():      # spins on the signal the main thread's spin sets
        seen.append(spin_wait.spin(signal_2, 60e6))
        flag[0] = 9     # ... then ends the main thread's spin

    signal_2 = np.zeros(1, np.int64)
    thread = threading.Thread(target=watcher)
    thread.start()
    assert spin_wait.spin(flag, 60e6, signal_2, 4) == 9
    thread.join()
    assert seen == [4]


def _idle_cpu_share(seconds=0.3) -> float:
    """The process's CPU time over ``seconds`` of the calling thread asleep, per second."""
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def _quiet_other_threads():
    """Numba's and OpenBLAS's workers may still spin from an earlier test: let them settle."""
    time.sleep(0.3)


@pytest.mark.parametrize("spin_us", [0.0, 200.0, 5e6])
def test_blocks_run_on_threads_with_any_spin(monkeypatch, spin_us):
    monkeypatch.setattr(block_threads, "SPIN_US", spin_us)
    try:
        for _ in range(20):
            got = block_threads.run(lambda i: (i * i, threading.get_ident()), 3)
            assert [v for v, _ in got] == [0, 1, 4]
            assert got[0][1] == threading.get_ident() and len({t for _, t in got}) == 3
    finally:
        block_threads.stop_spinning()


# a spinning thread keeps ~1 core busy (a loaded machine may give it less), a sleeping one ~0
SPINNING, SLEEPING = 0.3, 0.2


@pytest.fixture
def long_spin(monkeypatch):
    """A spin of a minute unless stopped; whatever a test leaves spinning is stopped."""
    monkeypatch.setattr(block_threads, "SPIN_US", 60e6)
    yield
    block_threads.stop_spinning()


def test_an_idle_block_thread_spins_at_most_spin_us_then_sleeps(monkeypatch):
    _quiet_other_threads()
    monkeypatch.setattr(block_threads, "SPIN_US", 50e3)          # 50 ms
    block_threads.run(lambda i: i, 2)
    time.sleep(0.2)                                               # its spin has ended
    assert _idle_cpu_share() < SLEEPING                           # asleep, not spinning


def test_stop_spinning_sends_spinning_block_threads_to_sleep(long_spin):
    _quiet_other_threads()
    block_threads.run(lambda i: i, 2)
    assert _idle_cpu_share(0.2) > SPINNING                        # a block thread spins
    block_threads.stop_spinning()
    assert _idle_cpu_share() < SLEEPING                           # and now sleeps
    assert block_threads.run(lambda i: i + 1, 2) == [1, 2]        # and still serves


def test_a_parallel_kernel_launch_stops_the_spinning(monkeypatch, long_spin):
    from volnet.runtime import launch
    _quiet_other_threads()
    block_threads.run(lambda i: i, 2)

    class _Kernel:
        def parallel(self, x):
            return x + 1

    monkeypatch.setitem(__import__("sys").modules, "volnet_spin_probe",
                        type("M", (), {"k": _Kernel()}))
    assert launch.run("volnet_spin_probe", "k", launch.PARALLEL_MIN, 1) == 2
    assert _idle_cpu_share() < SLEEPING


def test_a_stop_while_a_woken_thread_gets_up_is_kept(monkeypatch, long_spin):
    # wake_up releases a sleeping block thread; a prange launch right after (before the
    # thread is up: 0.25-0.5 ms on a VM) must still keep it from spinning once it is up
    _quiet_other_threads()
    monkeypatch.setattr(block_threads, "SPIN_US", 1000.0)
    block_threads.run(lambda i: i, 2)
    time.sleep(0.05)                                              # its 1 ms spin is over
    monkeypatch.setattr(block_threads, "SPIN_US", 60e6)
    with block_threads.section():
        block_threads.wake_up()
        block_threads.stop_spinning()
    assert _idle_cpu_share() < SLEEPING
    assert block_threads.run(lambda i: i * 3, 2) == [0, 3]        # and it still serves


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf"])
def test_a_bad_spin_setting_is_refused_naming_the_variable(value):
    import os
    import subprocess
    import sys
    env = dict(os.environ, VOLNET_SPIN_US=value)
    done = subprocess.run([sys.executable, "-c", "import volnet.runtime.block_threads"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and "VOLNET_SPIN_US" in last and "set 0" in last


def test_spin_setting_zero_never_spins():
    import os
    import subprocess
    import sys
    env = dict(os.environ, VOLNET_SPIN_US="0")
    code = ("from volnet.runtime import block_threads as b; print(b.SPIN_US)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False,
                          text=True, timeout=120)
    assert done.stdout.strip() == "0.0"


def test_spin_then_waits_for_the_second_flag_once_the_first_is_set():
    """``then``: when the flag turns to ``value`` the spin goes on until ``then`` is set too
    (a block thread handed a job waits for its caller's kernel), or ``then_us`` passed."""
    from volnet.runtime import spin_wait
    flag, then = np.ones(1, np.int64), np.zeros(1, np.int64)
    start = time.perf_counter()
    assert spin_wait.spin(flag, 60e6, None, 1, then, 2000) == 1   # then_us ran out
    assert time.perf_counter() - start >= 0.001
    then[0] = 1
    start = time.perf_counter()
    assert spin_wait.spin(flag, 60e6, None, 1, then, 60e6) == 1   # set: no wait
    assert time.perf_counter() - start < 30
    flag[0], then[0] = 2, 0
    assert spin_wait.spin(flag, 60e6, None, 1, then, 60e6) == 2   # another value: no wait

    def setter():
        time.sleep(0.02)
        then[0] = 1

    flag[0] = 1
    thread = threading.Thread(target=setter)
    start = time.perf_counter()
    thread.start()
    assert spin_wait.spin(flag, 60e6, None, 1, then, 60e6) == 1   # a minute's limit
    assert time.perf_counter() - start >= 0.015                   # ended by the setter
    thread.join()


@pytest.mark.parametrize("entered", [True, False])
def test_a_helper_runs_its_block_once_the_callers_kernel_started(entered, long_spin,
                                                                 monkeypatch):
    """run(..., entered=True): a woken block thread takes the GIL only once the caller's
    block raised block_threads.ENTERED (what its first compiled kernel does at entry,
    outside the GIL), not while the caller still prepares it. The caller's block sleeps
    first (the GIL free): a helper that did not wait would start then."""
    from numba import njit

    from volnet.runtime import spin_wait

    @njit(nogil=True)
    def kernel_entry(flag):
        spin_wait.raise_flag(flag)

    kernel_entry(np.zeros(1, np.int64))                           # compiled before timing
    monkeypatch.setattr(block_threads, "ENTERED_WAIT_US", 60e6)
    times = {}

    def block(i):
        if i == 0:
            time.sleep(0.05)
            times["entered"] = time.perf_counter()
            kernel_entry(block_threads.ENTERED)
        else:
            times["helper"] = time.perf_counter()
        return threading.get_ident()

    block_threads.run(lambda i: i, 2)                             # the helper now spins
    idents = block_threads.run(block, 2, entered=entered)
    assert idents[0] == threading.get_ident() != idents[1]        # block 1 on the helper
    assert (times["helper"] >= times["entered"]) == entered
