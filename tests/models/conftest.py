"""Zoo fixtures: cheap construction for shape-only tests (helpers are in zoo_helpers.py)."""

import numpy as np
import pytest

from volnet import init


@pytest.fixture
def lazy_init(monkeypatch):
    """Skip drawing random weights: counts and shapes do not depend on the values.

    ``np.zeros`` of a large array is lazy (untouched pages cost nothing), so a
    138 M-parameter VGG builds in milliseconds instead of seconds.
    """
    monkeypatch.setattr(init, "he_normal",
                        lambda shape, rng, dtype=np.float32: np.zeros(shape, dtype))
