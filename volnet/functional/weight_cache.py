"""Arrays derived from weights (Winograd filter transforms, the direct kernel's packed
filters), kept between inference calls and never stale.

A derived array is kept with a private copy of the arrays it came from (its *sources*)
and handed out again only while every source is the same array object, with the same
shape, dtype and bits (a bitwise comparison: -0.0 and 0.0 differ, a NaN equals itself).
Every way a weight can change is therefore caught by the one check, whoever writes it:
an optimizer step (in place, compiled or NumPy), ``load_state_dict``, ``astype`` or
``copy`` (new arrays), ``layer.params["weight"] = new``, a user's
``net.params["weight"][...] = ...`` or ``w[0, 0, 0, 0] += 1e-7``, an ONNX or PyTorch
import writing in place. Nothing outside this file has to remember to invalidate.

Why a content check and not a version counter with read-only parameters: volnet's own
code writes parameters in place in a dozen places (optimizers, importers, initialisers,
the lecture pages), and NumPy cannot intercept a write to a writeable array, so a version
bumped by "sanctioned writers" misses every other writer, and read-only parameters turn
each of those into a NumPy ``ValueError``. The check costs one read of the weights and of
their copy, measured against the Winograd F(4x4) filter transform it saves (2-core
machine, loaded, benchmarks/README.md, sixth round): 512x512x3x3 0.7 ms against 2.0-3.8 ms;
256x256x3x3 0.17 against 1.1 ms. After a change the first differing element ends the
check.

Memory: the cache holds at most ``BUDGET_BYTES`` of derived arrays and source copies
(``VOLNET_WEIGHT_CACHE_MB``, default 256; 0 turns caching off), least recently used out
first. Only inference calls use it (``keep_cache=False``): in training the weights change
every step.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np

BUDGET_BYTES = int(float(os.environ.get("VOLNET_WEIGHT_CACHE_MB", "256") or 0) * 2**20)

_entries: OrderedDict = OrderedDict()   # (ids of the sources, tag) -> _Entry, oldest first
# Reentrant, and nothing is freed while it is held: an entry's value may be another
# entry's source, whose finalizer (_forget) takes the lock again when the value dies.
_lock = threading.RLock()
_stats = {"hits": 0, "misses": 0, "bytes": 0}


class _Entry:
    __slots__ = ("copies", "nbytes", "refs", "value")

    def __init__(self, sources, value):
        self.refs = tuple(weakref.ref(s) for s in sources)
        self.copies = tuple(np.array(s, copy=True) for s in sources)
        self.value = value
        self.nbytes = value.nbytes + sum(c.nbytes for c in self.copies)


def _bits(a: np.ndarray) -> np.ndarray:
    """``a`` viewed as unsigned integers of its item size (bitwise comparison)."""
    kind = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(a.dtype.itemsize)
    return a.view(kind) if kind is not None and a.dtype.kind in "fiu" else a


def _unchanged(entry: _Entry, sources) -> bool:
    for ref, copy, source in zip(entry.refs, entry.copies, sources):
        if ref() is not source or copy.shape != source.shape or copy.dtype != source.dtype:
            return False
        if not np.array_equal(_bits(copy), _bits(source)):
            return False
    return True


def derived(sources: tuple, tag, make):
    """``make()``'s result for these source arrays, reused while none of them changed.

    Args:
        sources: the arrays the result is computed from (ndarrays; the same objects
            must be passed on every call for a reuse).
        tag: what is derived and how (e.g. ``("winograd", 4)``); part of the key.
        make: computes the result from the sources' current values.

    Returns:
        ``make()``'s array, made read-only: it is handed out again.
    """
    if BUDGET_BYTES <= 0:
        return make()
    key = (tuple(id(s) for s in sources), tag)
    with _lock:
        entry = _entries.get(key)
        if entry is not None:
            _entries.move_to_end(key)
    if entry is not None and _unchanged(entry, sources):
        _stats["hits"] += 1
        return entry.value
    _stats["misses"] += 1
    value = make()
    value.flags.writeable = False
    entry = _Entry(sources, value)
    if entry.nbytes > BUDGET_BYTES:
        return value
    dropped = []            # released after the lock (their finalizers take it)
    with _lock:
        known = key in _entries     # then its sources already carry a finalizer
        dropped.append(_entries.pop(key, None))
        _entries[key] = entry
        _stats["bytes"] += entry.nbytes - (dropped[0].nbytes if dropped[0] else 0)
        while _stats["bytes"] > BUDGET_BYTES:
            _, old = _entries.popitem(last=False)
            _stats["bytes"] -= old.nbytes
            dropped.append(old)
    if not known:
        for source in sources:      # a source that dies takes its entry with it
            weakref.finalize(source, _forget, key)
    del dropped
    return value


def _forget(key) -> None:
    with _lock:
        entry = _entries.pop(key, None)
        if entry is not None:
            _stats["bytes"] -= entry.nbytes
    del entry                       # freed outside the lock


def stats() -> dict:
    """{"hits", "misses", "entries", "bytes"}: how the cache did (benchmarks, tests)."""
    with _lock:
        return dict(_stats, entries=len(_entries))


def clear() -> None:
    """Drop every cached array."""
    with _lock:
        dropped = list(_entries.values())
        _entries.clear()
        _stats["bytes"] = 0
    del dropped
