"""Which kernels run: the compiled ones (numba) or the NumPy reference path.

The NumPy kernels in this package are the readable reference; compiled numba
kernels (``volnet/functional/compiled/``) replace them where they are faster.
The choice, in order of precedence:

* ``set_kernels("numpy" | "numba" | "auto")`` or the ``use_kernels(...)``
  context manager, from Python;
* the ``VOLNET_KERNELS`` environment variable (same values), read at import;
* ``"auto"``: numba when it imports, else NumPy.

If numba cannot be imported, "auto" falls back to NumPy with one warning;
asking for "numba" explicitly then raises a ``ConfigError`` that says how to
install it. Kernels call ``compiled(size)`` at run time, so a switch takes effect
on the next call.

Under "auto", a call touching fewer than ``COMPILED_MIN`` elements runs the NumPy
kernel and does not import numba: importing numba and initialising its compiler
costs ~1.2 s per process (0.47 s import, 0.7 s target set-up on the first kernel,
measured on the 2-core machine, benchmarks/README.md sixth round), while the compiled
kernels save at most tens of microseconds on such calls (relu / max pool / batch norm on
16K elements: 5 / 14 / 48 us in NumPy against 6 / 27 / 12 us compiled). So a command
whose every call is small (``volnet predict`` on a LeNet digit) never loads numba. The
choice depends only on the call's size, never on what ran before, so a run is as
reproducible as before. ``"numba"`` uses the compiled kernels at every size.

    >>> from volnet.runtime import backend
    >>> with backend.use_kernels("numpy"):
    ...     backend.compiled()
    False
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

from volnet.errors import ConfigError

CHOICES = ("auto", "numba", "numpy")
COMPILED_MIN = 1 << 14   # elements: smaller calls run NumPy under "auto" (see above)
_state = {"choice": None, "numba": None}   # numba: None = not tried, False = missing, module


def _numba():
    """The numba module, or False when it cannot be imported (tried once)."""
    if _state["numba"] is None:
        # numba's OpenMP threading layer reads this when its threads start (first parallel
        # kernel). Spinning waiters cost 20 ms per kernel call on a busy 2-core machine
        # instead of 0.1 ms (benchmarks/README.md, "compiled kernels"); the user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
        # Compiled kernels are cached per user, never inside the installed package: pip does
        # not know files written there (a reinstall leaves a stray __pycache__ that shadows an
        # editable checkout) and a system or container install is read-only. numba reads this
        # when it is imported; the user's NUMBA_CACHE_DIR wins.
        from volnet.data.download import cache_dir
        os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(cache_dir(), "numba"))
        try:
            import numba
        except Exception as exc:   # ImportError, or a broken llvmlite install
            _state["numba"] = False
            if _choice() == "auto":
                warnings.warn(f"numba could not be imported ({exc}); volnet uses its NumPy "
                              "kernels, which are slower. Fix: pip install numba",
                              RuntimeWarning, stacklevel=3)
        else:
            if not numba.config.CACHE_DIR:   # numba was imported before volnet set it
                numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
            # the user's thread count (OMP_NUM_THREADS... as for BLAS) is volnet's threads'
            # count too; numba alone would take every core
            from volnet.runtime.thread_policy import user_threads
            if user_threads() is not None:
                numba.set_num_threads(max(1, min(user_threads(), numba.config.NUMBA_NUM_THREADS)))
            _state["numba"] = numba
    return _state["numba"]


def _check(name: str) -> str:
    name = str(name).strip().lower()
    if name not in CHOICES:
        raise ConfigError(f"unknown kernel choice {name!r}: use one of {', '.join(CHOICES)} "
                          "(VOLNET_KERNELS or volnet.runtime.backend.set_kernels)")
    return name


def _choice() -> str:
    if _state["choice"] is None:
        _state["choice"] = _check(os.environ.get("VOLNET_KERNELS", "auto") or "auto")
    return _state["choice"]


def set_kernels(name: str) -> None:
    """Select "numba", "numpy" or "auto" for every later kernel call."""
    name = _check(name)
    if name == "numba" and not numba_available():
        raise ConfigError("VOLNET_KERNELS=numba but numba cannot be imported; "
                          "fix: pip install numba, or use 'auto'/'numpy'")
    _state["choice"] = name


@contextlib.contextmanager
def use_kernels(name: str) -> Iterator[None]:
    """Run the enclosed code with the given kernel choice, then restore the previous one."""
    previous = _choice()
    set_kernels(name)
    try:
        yield
    finally:
        _state["choice"] = previous


def numba_module():
    """The numba module when it imports (importing it on the first call), else None."""
    return _numba() or None


def numba_available() -> bool:
    """True when numba imports."""
    return bool(_numba())


def compiled(size: int | None = None) -> bool:
    """True when the compiled kernels should run now, for a call touching ``size`` elements
    (None: any size)."""
    choice = _choice()
    if choice == "numpy":
        return False
    if choice == "auto" and size is not None and size < COMPILED_MIN:
        return False
    if choice == "numba" and not numba_available():
        raise ConfigError("VOLNET_KERNELS=numba but numba cannot be imported; "
                          "fix: pip install numba, or use 'auto'/'numpy'")
    return numba_available()


def fusing() -> bool:
    """Whether containers fuse layers (batch norm or conv with the ReLU after it, a batch
    norm into its conv at inference): whenever the kernels are not pinned to the NumPy
    reference path. Fused steps are correct on either kernel path; this never imports
    numba."""
    return _choice() != "numpy"


def loaded_numba():
    """The numba module if a kernel call imported it already, else None (imports nothing)."""
    return _state["numba"] or None


def active() -> str:
    """The name of the kernels that run now: "numba" or "numpy"."""
    return "numba" if compiled() else "numpy"
