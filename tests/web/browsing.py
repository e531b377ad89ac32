"""Helpers shared by the Chromium tests: where screenshots go, and waiting from Python."""

import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "web"


def shoot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def poll(check, timeout=60.0, what="condition", ignore=(), interval=0.1):
    """Wait for ``check()`` from Python: the pages' CSP forbids eval, which wait_for_function
    uses. Exceptions in ``ignore`` (a table read while the page redraws it) count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except ignore:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
