"""Anomaly mode: name the first layer, and the pass, that produced a NaN or an infinity.

Inside ``with vn.detect_anomaly():`` every layer's forward output, and after its backward
its input gradient and its parameter gradients, are checked for NaN and +-inf, like
``torch.autograd.detect_anomaly``. The first non-finite value stops the pass with a
:class:`~volnet.errors.NonFiniteError` that names the layer (its type, arguments and place in
the network), the pass (forward or backward), what held the value and how many there were.

The checks use the global hooks of :mod:`volnet.layers.hooks`, which run after a layer's
forward or backward and, for a container, after all its children's: the first leaf
layer that goes non-finite is therefore reported, not the container around it; a
container is named only when its own operation (a Residual's sum, a Concat) does it.
Anomaly mode is per thread (other threads' passes are not checked) and slows every layer
by one pass over its output, so it is for finding a fault, not for production runs.
``volnet train --detect-anomaly`` runs a training command in it.

Where a NaN spreads depends on the convolution kernel. A Winograd F(4x4, 3x3) convolution
(``volnet.functional.conv_choice``, float32 3x3 stride-1 layers with enough tiles) transforms
whole 6x6 input tiles into 4x4 output tiles, so one NaN in its input makes every output of
each tile whose input window holds it NaN -- more outputs than direct convolution, which
spreads it over the kernel's footprint only (issue 24 measured 800 non-finite outputs
against 288, forward and input gradient alike). Its transforms also subtract, so an input
of +-inf becomes NaN (inf - inf) where direct convolution gives +-inf. Both are what the
arithmetic of the algorithm does and were left alone: checking every input for finiteness
to fall back to direct convolution would cost a pass over each activation on the fastest
path. The first layer that produced a non-finite value, which anomaly mode reports, is the
same either way; ``VOLNET_WINOGRAD=0`` gives direct convolution's spread and signs.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from volnet.errors import NonFiniteError
from volnet.layers import hooks

_local = threading.local()


def enabled() -> bool:
    """Whether anomaly mode is on in the calling thread."""
    return getattr(_local, "depth", 0) > 0


@contextlib.contextmanager
def detect_anomaly():
    """Check every layer's outputs and gradients in the block; stop at the first NaN/inf.

    Example:
        >>> import numpy as np, volnet as vn
        >>> net = vn.Sequential(vn.Linear(2, 2, rng=0), vn.Sequential(vn.Linear(2, 1, rng=1)))
        >>> net[1][0].params["weight"][0, 0] = np.inf
        >>> with vn.detect_anomaly():
        ...     net.forward(np.ones((1, 2), np.float32))
        Traceback (most recent call last):
        ...
        volnet.errors.NonFiniteError: anomaly mode: the forward pass of Linear(...) at 1.0 ...
    """
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    handles = [hooks.register_forward_hook(_check_forward),
               hooks.register_backward_hook(_check_backward)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        _local.depth = depth


def _count(array) -> tuple[int, int, int] | None:
    """(NaN count, inf count, size) of a float array holding any, else None."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fc":
        return None
    if np.isfinite(array).all():
        return None
    nan = int(np.isnan(array).sum())
    return nan, int(array.size - nan - np.isfinite(array).sum()), int(array.size)


def _report(layer, pass_name: str, what: str, counts, source: str) -> NonFiniteError:
    nan, inf, size = counts
    found = " and ".join(f"{n:,} {kind}" for n, kind in ((nan, "NaN"), (inf, "inf")) if n)
    return NonFiniteError(
        f"anomaly mode: the {pass_name} pass of {layer.where()} produced {found} of {size:,} "
        f"values in {what}, from {source}. It is the first layer in this {pass_name} pass to "
        "produce a non-finite value; look at its inputs' range, its weights and, for "
        "training, the learning rate.")


def _check_forward(layer, x, out, training) -> None:
    if not enabled():
        return
    counts = _count(out)
    if counts is not None:
        source = "an input that already held NaN/inf" if _count(x) else "a finite input"
        raise _report(layer, "forward", "its output", counts, source)


def _check_backward(layer, dout, dx) -> None:
    if not enabled():
        return
    source = "an output gradient that already held NaN/inf" if _count(dout) else \
        "a finite output gradient"
    for name, grad in getattr(layer, "grads", {}).items():
        counts = _count(grad)
        if counts is not None:
            raise _report(layer, "backward", f"the gradient of its parameter {name!r}", counts,
                          source)
    counts = _count(dx)
    if counts is not None:
        raise _report(layer, "backward", "its input gradient", counts, source)
