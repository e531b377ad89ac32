"""Weight initialisers, named for what they draw. All take an explicit generator.

Default for Conv2d and Linear: ``he_normal`` (Kaiming He et al. 2015): weights
~ N(0, 2 / fan_in), the variance that keeps ReLU activations from shrinking or
growing layer to layer; biases start at zero.
"""

from __future__ import annotations

import numpy as np


def make_rng(rng=None) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (fresh OS entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit: in_features, or C/groups * KH * KW."""
    return int(np.prod(shape[1:]))


def he_normal(shape, rng, dtype=np.float32) -> np.ndarray:
    """N(0, sqrt(2 / fan_in)): He/Kaiming normal initialisation for ReLU nets."""
    std = np.sqrt(2.0 / max(1, fan_in(shape)))
    return (rng.standard_normal(shape) * std).astype(dtype)


def uniform(shape, bound: float, rng, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound)."""
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, std: float, rng, dtype=np.float32) -> np.ndarray:
    """N(0, std)."""
    return (rng.standard_normal(shape) * std).astype(dtype)
