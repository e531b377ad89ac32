"""Shared fixtures: a seeded generator, the Hypothesis CI profile, the fuzz suite's option."""

import os

import numpy as np
import pytest
from hypothesis import settings

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
