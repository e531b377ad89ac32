"""Ctrl-C as "stop after this batch": the run ends between two updates, in a state that
checkpoints and resumes exactly; a second Ctrl-C interrupts at once."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def stop_on_interrupt(trainer, enabled: bool = True):
    """While inside, SIGINT calls ``trainer.stop()`` once; the next SIGINT raises as usual.

    Does nothing outside the main thread (where Python cannot install handlers)
    or when ``enabled`` is False (e.g. under MPI, where ranks must stop together).
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        signal.signal(signal.SIGINT, previous)   # a second Ctrl-C is a hard interrupt
        trainer.stop()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
