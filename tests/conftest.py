"""Shared fixtures: a seeded generator, the Hypothesis CI profile, the fuzz suite's option, two numba
threads."""

import os

import numpy as np
import pytest
from hypothesis import settings

from volnet.runtime import backend

# The sub-folders' conftest.py files load as conftests, never again as doctest modules
# (--doctest-modules in pyproject.toml): two of them share the module name "conftest", which
# made `pytest tests/web tests/functional` stop with "import file mismatch".
collect_ignore_glob = ["*/conftest.py"]

settings.register_profile("ci", derandomize=True, database=None, max_examples=50, deadline=None)
settings.register_profile("dev", database=None, max_examples=15, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--fuzz-count", type=int, default=None,
                     help="cases per reader for the fuzz suite (tests/fuzz); default: a few "
                          "hundred each. Long mode: pytest -m fuzz --fuzz-count 10000")


def pytest_configure(config):
    config.addinivalue_line("markers", "fuzz: Hypothesis mutation of valid files and requests "
                                       "(tests/fuzz); -m fuzz --fuzz-count N for a long run")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def two_threads():
    """Two numba threads (the block threads' count); skipped where numba has one (a one-core
    machine, NUMBA_NUM_THREADS=1): what these tests check is how work splits over two."""
    if not backend.numba_available():
        pytest.skip("numba missing")
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads (NUMBA_NUM_THREADS is 1 here)")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield 2
    numba.set_num_threads(before)
