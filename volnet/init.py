"""Weight initialisers, named for what they draw. All take an explicit generator.

Default for Conv2d and Linear: ``he_normal`` (Kaiming He et al. 2015): weights
~ N(0, 2 / fan_in), the variance that keeps ReLU activations from shrinking or
growing layer to layer; biases start at zero.
"""

from __future__ import annotations

import contextlib
import mmap
import threading

import numpy as np

_local = threading.local()   # shapes_only() flag, per thread


def make_rng(rng=None) -> np.random.Generator:
    """A Generator from a Generator, an int seed, or None (fresh OS entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def fan_in(shape: tuple[int, ...]) -> int:
    """Inputs feeding one output unit: in_features, or C/groups * KH * KW."""
    return int(np.prod(shape[1:]))


@contextlib.contextmanager
def shapes_only():
    """Build networks whose initial weights are never drawn nor written.

    Inside the block every initialiser returns zeros in pages the operating
    system maps lazily (an anonymous memory map): building VGG-16 (138 M
    weights) takes milliseconds and its weights use no memory until written. For
    summaries, receptive fields and other walks over shapes; such a network
    computes nothing useful until weights are loaded into it.

    Example:
        >>> import volnet as vn
        >>> with shapes_only():
        ...     net = vn.models.vgg16()
        >>> net.num_params(), float(abs(net.features[0].params["weight"]).max())
        (138357544, 0.0)
    """
    previous = getattr(_local, "shapes_only", False)
    _local.shapes_only = True
    try:
        yield
    finally:
        _local.shapes_only = previous


def lazy_zeros(shape, dtype=np.float32) -> np.ndarray:
    """A writable zero array whose memory is committed only where it is written.

    ``np.zeros`` is lazy only above glibc's moving mmap threshold (up to 32 MB);
    below it the heap chunk is cleared with memset, which touches every page.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < (1 << 16):
        return np.zeros(shape, dtype=dtype)
    return np.ndarray(shape, dtype=dtype, buffer=mmap.mmap(-1, nbytes))


def _scaled_normal(shape, std: float, rng, dtype) -> np.ndarray:
    """N(0, std) drawn directly in float32 (or float64): no float64 array then a cast."""
    dtype = np.dtype(dtype)
    if getattr(_local, "shapes_only", False):
        return lazy_zeros(shape, dtype)      # untouched pages: no memory, no time
    draw = np.float64 if dtype == np.float64 else np.float32
    out = rng.standard_normal(shape, dtype=draw)
    out *= out.dtype.type(std)
    return out if out.dtype == dtype else out.astype(dtype)


def he_normal(shape, rng, dtype=np.float32) -> np.ndarray:
    """N(0, sqrt(2 / fan_in)): He/Kaiming normal initialisation for ReLU nets.

    Drawn in the target precision (float32 by default) with NumPy's ziggurat.
    """
    return _scaled_normal(shape, np.sqrt(2.0 / max(1, fan_in(shape))), rng, dtype)


def uniform(shape, bound: float, rng, dtype=np.float32) -> np.ndarray:
    """U(-bound, bound)."""
    if getattr(_local, "shapes_only", False):
        return lazy_zeros(shape, dtype)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def normal(shape, std: float, rng, dtype=np.float32) -> np.ndarray:
    """N(0, std), drawn in the target precision."""
    return _scaled_normal(shape, std, rng, dtype)
