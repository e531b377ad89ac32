"""The fuzz suite's harness: byte-level mutations of valid inputs, and the loop that checks them.

Every reader gets valid seed files and Hypothesis strategies that mutate them:
byte flips, truncation, insertion, deletion, interesting integers written over
a field (0, 2**31, 2**64 - 1...), copied slices, plus format-aware edits in the
test modules (header rewrites, JSON tree edits). :func:`run_fuzz` feeds each
mutated input to the reader with a small memory budget and asserts that it
either loads (and the result passes the reader's own consistency check) or
raises a :class:`~volnet.errors.VolnetError`; any other exception fails the
test, and so does a tracemalloc peak above the budget plus a small slack.

Cases per reader: ``DEFAULT_CASES`` in the ordinary run, ``--fuzz-count N`` for a
long run (``pytest -m fuzz --fuzz-count 10000``). With ``VOLNET_FUZZ_REPORT=FILE``
each reader appends one JSON line (cases, loaded, refused, peak, seconds).
"""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from volnet.errors import VolnetError

MiB = 1 << 20
BUDGET = 16 * MiB          # the readers' max_bytes during fuzzing
SLACK = 2 * MiB            # interpreter overhead beyond what the readers count
DEFAULT_CASES = 200

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 16, 28, 32, 127, 128, 255, 256, 1000, 3072, 3073, 65535,
               65536, 2 ** 24, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 40, 2 ** 53,
               2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]

_position = st.integers(0, 1 << 20)   # taken modulo the input's length
_operation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), _position, st.integers(1, 64)),
    st.tuples(st.just("int"), _position, st.sampled_from([1, 2, 4, 8]),
              st.sampled_from(INTERESTING), st.sampled_from("<>")),
    st.tuples(st.just("copy"), _position, _position, st.integers(1, 256)),
)


def apply_ops(data: bytes, ops) -> bytes:
    """Apply mutation operations (as drawn from ``_operation``) in order."""
    out = bytearray(data)
    for op in ops:
        kind, at = op[0], op[1] % (len(out) + 1)
        if kind == "flip" and at < len(out):
            out[at] ^= op[2]
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = op[2]
        elif kind == "delete":
            del out[at:at + op[2]]
        elif kind == "int":
            width, value, order = op[2], op[3] % (1 << (8 * op[2])), op[4]
            code = {1: "B", 2: "H", 4: "I", 8: "Q"}[width]
            out[at:at + width] = struct.pack(order + code, value)
        elif kind == "copy" and out:
            source = op[2] % len(out)
            out[at:at] = out[source:source + op[3]]
    return bytes(out)


def byte_mutations(seed: bytes, max_ops: int = 4):
    """Strategy: ``seed`` with 1..max_ops byte-level mutations."""
    return st.lists(_operation, min_size=1, max_size=max_ops).map(lambda ops: apply_ops(seed, ops))


# ---- JSON tree edits ----------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.sampled_from(INTERESTING),
                         st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False),
                         st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def _paths(doc, limit: int = 40):
    """Every path into ``doc`` (tuples of keys/indices), not descending below ``limit``."""
    stack = [((), doc)]
    while stack:
        prefix, value = stack.pop()
        yield prefix
        if len(prefix) >= limit:
            continue
        if isinstance(value, dict):
            stack.extend((prefix + (k,), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((prefix + (i,), v) for i, v in enumerate(value))


def _replace(doc, path, make):
    if not path:
        return make(doc)
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[path[0]] = _replace(doc[path[0]], path[1:], make)
    return copy


NO_VALUES = st.nothing()


@st.composite
def json_edits(draw, seed_doc, extra_values=NO_VALUES, max_edits: int = 3):
    """``seed_doc`` with 1..max_edits subtrees replaced, deleted, duplicated or deeply nested."""
    doc = seed_doc
    for _ in range(draw(st.integers(1, max_edits))):
        paths = list(_paths(doc))
        path = paths[draw(st.integers(0, len(paths) - 1))]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "duplicate", "nest", "wrap"]))
        if kind == "replace" or (kind == "delete" and not path):
            value = draw(st.one_of(json_values, extra_values))
            doc = _replace(doc, path, lambda _, new=value: new)
        elif kind == "delete":
            doc = _replace(doc, path[:-1], lambda p, last=path[-1]: _without(p, last))
        elif kind == "duplicate":
            count = draw(st.integers(2, 50))
            doc = _replace(doc, path, lambda v, n=count: [v] * n)
        elif kind == "nest":
            depth = draw(st.sampled_from([2, 10, 60, 99, 101, 150, 1000, 5000]))
            doc = _replace(doc, path, lambda v, d=depth: _nested(v, d))
        else:   # wrap a subtree in a dict
            doc = _replace(doc, path, lambda v: {"__layer__": v})
    return doc


def _without(container, key):
    if isinstance(container, dict):
        return {k: v for k, v in container.items() if k != key}
    return [v for i, v in enumerate(container) if i != key]


def _nested(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


def dumps(doc) -> str:
    """JSON text of a document of any depth (an explicit stack, not Python's recursion)."""
    out, stack = [], [("value", doc)]
    while stack:
        kind, item = stack.pop()
        if kind == "text":
            out.append(item)
        elif isinstance(item, dict):
            parts = [("text", "}")]
            for i, (key, value) in enumerate(reversed(list(item.items()))):
                parts += [("value", value), ("text", json.dumps(str(key)) + ":")]
                if i < len(item) - 1:
                    parts.append(("text", ","))
            stack += parts + [("text", "{")]
        elif isinstance(item, list):
            parts = [("text", "]")]
            for i, value in enumerate(reversed(item)):
                parts.append(("value", value))
                if i < len(item) - 1:
                    parts.append(("text", ","))
            stack += parts + [("text", "[")]
        else:
            out.append(json.dumps(item))
    return "".join(out)


# ---- the loop ---------------------------------------------------------------------------------
class Refused(Exception):
    """Raised by a target for an input it refused properly (e.g. an HTTP 4xx)."""


def fuzz_count(request, default: int = DEFAULT_CASES) -> int:
    return request.config.getoption("--fuzz-count") or default


def run_fuzz(request, name: str, strategy, target, budget: int = BUDGET,
             refusals=(VolnetError, Refused), default: int = DEFAULT_CASES) -> Counter:
    """Feed ``fuzz_count`` inputs drawn from ``strategy`` to ``target``.

    ``target(value)`` loads the input and checks the result; it may raise only a
    ``refusals`` exception. Returns the counts (cases, loaded, refused, peak).
    """
    stats: Counter = Counter()
    count = fuzz_count(request, default)

    @settings(max_examples=count, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(value):
        stats["cases"] += 1
        tracemalloc.start()   # around the reader only: Hypothesis itself runs untraced (4x faster)
        try:
            target(value)
            stats["loaded"] += 1
        except refusals:
            stats["refused"] += 1
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        stats["peak"] = max(stats["peak"], peak)
        assert peak < budget + SLACK, f"{name}: peak {peak:,} bytes over the {budget:,} budget"

    start = time.perf_counter()
    case()
    seconds = time.perf_counter() - start
    line = {"reader": name, **stats, "seconds": round(seconds, 2)}
    print(f"\nfuzz {json.dumps(line)}")
    report = os.environ.get("VOLNET_FUZZ_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(line) + "\n")
    assert stats["cases"] >= min(count, 50)   # Hypothesis really ran the cases
    return stats
