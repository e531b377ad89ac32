"""Resource limits for everything volnet reads: a memory budget, JSON depth, regular files.

A file or request volnet did not write can declare anything: a 6 KB ``.pth``
can describe gigabytes of expanded tensors, a 1 MB gzip can claim 2 GiB of
images, a typed layer list can need 12 GB of activations. Every reader adds up
what the whole input would materialise *before* allocating it and compares
the total with one memory budget:

* default :data:`DEFAULT_MAX_BYTES` (2 GiB), enough for every zoo model's
  ImageNet weights (VGG-19 with batch norm: 548 MB) and all of CIFAR-10;
* raised (or lowered) by the environment variable ``VOLNET_MAX_BYTES`` (bytes, or
  a number with a K/M/G/T suffix), by ``volnet --max-bytes SIZE COMMAND``, or per
  call with the readers' ``max_bytes=`` argument; the error names all three.

JSON from files and requests is parsed only when its nesting depth is at most
:data:`MAX_JSON_DEPTH` (deeper documents made Python's parser raise
``RecursionError``), and data files are opened only when they are regular files
(a FIFO named ``x.png`` would block a reader forever).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat

import numpy as np

from volnet.errors import BudgetError, ConfigError, VolnetError

DEFAULT_MAX_BYTES = 2 * 1024 ** 3
ENV_VAR = "VOLNET_MAX_BYTES"
MAX_JSON_DEPTH = 100
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_override: list[int] = []   # set by ``volnet --max-bytes`` for the duration of a command


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; plain integers are bytes.

    Example:
        >>> parse_size("2G"), parse_size("1.5k"), parse_size("4096")
        (2147483648, 1536, 4096)
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kKmMgGtT]?)[iI]?[bB]?\s*", str(text))
    if match is None:
        raise ConfigError(f"memory budget {text!r} is not a size such as 4G, 512M or 1000000")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ConfigError(f"memory budget {text!r} must be positive")
    return value


def max_bytes(value: int | str | None = None) -> int:
    """The budget in force: ``value`` if given, else ``volnet --max-bytes``, else
    ``$VOLNET_MAX_BYTES``, else :data:`DEFAULT_MAX_BYTES`."""
    if value is not None:
        return parse_size(value) if isinstance(value, str) else int(value)
    if _override:
        return _override[-1]
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return parse_size(env)
        except ConfigError:
            raise ConfigError(f"{ENV_VAR}={env!r} is not a size such as 4G, 512M or "
                              "1000000") from None
    return DEFAULT_MAX_BYTES


@contextlib.contextmanager
def budget(value: int | str):
    """Use ``value`` as the default budget inside the block (``volnet --max-bytes``)."""
    _override.append(parse_size(value) if isinstance(value, str) else int(value))
    try:
        yield
    finally:
        _override.pop()


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""   # unreachable


def check_budget(nbytes: int, what: str, limit: int | str | None = None,
                 error: type[VolnetError] = BudgetError) -> None:
    """Raise ``error`` (also a :class:`BudgetError`) when ``nbytes`` exceeds the budget.

    Args:
        nbytes: the total the input would materialise, computed before allocating.
        what: names the input and what was counted, for the message.
        limit: an explicit budget (the readers' ``max_bytes`` argument).
        error: the reader's own error class (``CheckpointError``, ``DataError``...).

    Example:
        >>> check_budget(3 * 1024 ** 3, "x.pth: 20 tensors", limit="1G")
        Traceback (most recent call last):
        ...
        volnet.errors.BudgetError: x.pth: 20 tensors would need 3.0 GiB...
    """
    allowed = max_bytes(limit)
    if nbytes > allowed:
        cls = error if issubclass(error, BudgetError) else _budget_class(error)
        raise cls(f"{what} would need {_size(nbytes)} ({nbytes:,} bytes) of memory, more than "
                  f"the budget of {_size(allowed)}; if you trust this input, raise the budget "
                  f"with max_bytes=..., the environment variable {ENV_VAR} (e.g. "
                  f"{ENV_VAR}=8G) or volnet --max-bytes 8G")


_BUDGET_CLASSES: dict[type, type] = {}


def _budget_class(error: type[VolnetError]) -> type:
    """``error`` and :class:`BudgetError` in one class, so either ``except`` catches it."""
    if error not in _BUDGET_CLASSES:
        _BUDGET_CLASSES[error] = type(error.__name__, (error, BudgetError), {
            "__module__": error.__module__,
            "__doc__": f"{error.__name__} raised because the memory budget would be exceeded.",
            # pickles (multiprocessing) as the reader's own class, which pickle can find
            "__reduce__": lambda self: (error, self.args)})
    return _BUDGET_CLASSES[error]


# ---- JSON -----------------------------------------------------------------------------------
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_DEPTH_DELTA = np.zeros(256, dtype=np.int8)
_DEPTH_DELTA[[ord("["), ord("{")]] = 1
_DEPTH_DELTA[[ord("]"), ord("}")]] = -1


def json_depth(text: str | bytes) -> int:
    """Deepest nesting of ``[``/``{`` in a JSON text, brackets inside strings ignored.

    Computed without parsing (and so without recursion), in linear time.

    Example:
        >>> json_depth('{"a": [1, {"b": "[[["}]}')
        3
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if b"[" not in data and b"{" not in data:
        return 0
    bare = _STRING.sub(b"", data)
    steps = _DEPTH_DELTA[np.frombuffer(bare, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0))


def loads_json(text: str | bytes, what: str, error: type[VolnetError] = VolnetError,
               max_depth: int = MAX_JSON_DEPTH, **kwargs):
    """``json.loads`` that refuses documents nested deeper than ``max_depth`` with ``error``.

    Any parse failure is an ``error`` naming ``what``; ``kwargs`` go to ``json.loads``.

    Example:
        >>> loads_json("[" * 500 + "]" * 500, "request body")
        Traceback (most recent call last):
        ...
        volnet.errors.VolnetError: request body nests 500 levels deep; the limit is 100...
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise error(f"{what} must be JSON text, got {type(text).__name__}")
    try:
        depth = json_depth(text)
    except UnicodeEncodeError:
        raise error(f"{what} is not valid UTF-8 text") from None
    if depth > max_depth:
        raise error(f"{what} nests {depth} levels deep; the limit is {max_depth} (no file or "
                    "request volnet writes comes close; the input is corrupt or hostile)")
    try:
        return json.loads(text, **kwargs)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise error(f"{what} is not valid JSON: {err}") from None
    except RecursionError:   # cannot happen below the depth limit; kept as a last guard
        raise error(f"{what} nests too deeply to parse") from None


# ---- files ----------------------------------------------------------------------------------
def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (after following symlinks); False for FIFOs, devices, folders."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_regular(path: str | os.PathLike, error: type[VolnetError] = VolnetError):
    """Open ``path`` for binary reading only if it is a regular file; never blocks.

    The file is opened non-blocking (so a FIFO cannot stall the open) and checked
    with ``fstat`` on the open descriptor (so it cannot be swapped after a check).

    Raises:
        error: missing, unreadable, or not a regular file (FIFO, device, folder...).
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, expected a file") from None
    except OSError as err:
        raise error(f"cannot read {path}: {err.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                    "a directory" if stat.S_ISDIR(mode) else "not a regular file")
            raise error(f"{path} is {kind}; volnet reads only regular files (a pipe or device "
                        "could block forever or never end)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
