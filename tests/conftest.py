"""Shared fixtures: a seeded generator and the Hypothesis CI profile."""

import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, max_examples=50, deadline=None)
settings.register_profile("dev", database=None, max_examples=15, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
