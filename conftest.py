"""Doctests see NumPy as ``np``, volnet as ``vn`` and volnet's public names."""

import numpy as np
import pytest

import volnet


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["vn"] = volnet
    for name in volnet.__all__:
        doctest_namespace[name] = getattr(volnet, name)
