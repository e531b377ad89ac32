"""Numerical gradient checks: central differences in float64 and random-direction VJP tests.

Used by the test suite and available to users who write their own layers:

    >>> import volnet as vn
    >>> layer = vn.Linear(3, 2, rng=0).astype("float64")
    >>> x = np.random.default_rng(0).standard_normal((2, 3))
    >>> max(check_gradients(layer, x, rng=0).values()) < 1e-6
    True
"""

from __future__ import annotations

import numpy as np

from volnet.errors import DTypeError


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """CS231n's elementwise max |a - b| / (|a| + |b|), with a floor on the denominator.

    Entries more than 100x smaller than the array's largest |a| + |b| are measured
    against 1% of it: a true gradient of ~0 (a bias feeding batch norm, a tiny batch)
    would otherwise turn finite-difference noise (~1e-10) into a relative error of 1.

    Example:
        >>> relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.2]))   # 0.2 / 4.2
        0.047619...
    """
    if not a.size:
        return 0.0
    total = np.abs(a) + np.abs(b)
    denom = np.maximum(total, max(1e-2 * float(total.max()), 1e-300))
    return float(np.max(np.abs(a - b) / denom))


def _generators(layer) -> list:
    """(layer, state) for every sub-layer drawing random numbers (dropout masks)."""
    return [(lay, lay.rng.bit_generator.state) for _, lay in layer.named_layers()
            if isinstance(getattr(lay, "rng", None), np.random.Generator)]


def _loss_fn(layer, x, upstream, training, generators):
    """Scalar L = sum(forward(x) * upstream): its gradient w.r.t. the output is ``upstream``.

    Every random generator is rewound first, so each evaluation draws the same dropout mask.
    """
    def loss() -> float:
        for lay, state in generators:
            lay.rng.bit_generator.state = state
        return float(np.sum(layer.forward(x, training, cache=False) * upstream))
    return loss


def numerical_gradient(f, array: np.ndarray, eps: float = 1e-6, indices=None) -> np.ndarray:
    """Central differences of scalar ``f()`` w.r.t. ``array`` (perturbed in place and restored)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size) if indices is None else indices:
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(layer, x: np.ndarray, rng=None, training: bool = True, eps: float = 1e-6,
                    max_entries: int | None = None) -> dict[str, float]:
    """Compare ``backward`` with central differences for the input and every parameter.

    Runs in float64 (convert the layer with ``astype("float64")``). The loss is
    ``sum(forward(x) * upstream)`` with a random upstream gradient, so every
    output element counts with a different weight. With ``training=True``
    dropout's generators are rewound before every evaluation (one mask
    throughout) and batch norm uses batch statistics; running averages and
    generator states are restored afterwards.

    Returns:
        ``{"input": err, "<param name>": err, ...}``: CS231n relative errors.
        ``max_entries`` limits how many entries of each array are probed
        (chosen at random, always including the first and last).

    A parameter whose true gradient is exactly zero everywhere (a conv bias
    feeding batch norm in training mode, which the normalisation cancels)
    reports finite-difference noise as an error near 1: build such layers
    with ``bias=False``, as ResNets do.
    """
    if x.dtype != np.float64 or any(p.dtype != np.float64 for _, p, _ in layer.named_params()):
        raise DTypeError("check_gradients needs float64 input and parameters: use "
                         "layer.astype('float64') and x.astype(np.float64)")
    rng = np.random.default_rng(rng)
    x = x.copy()
    buffers = {k: v.copy() for k, v in layer.state_dict().items()}
    generators = _generators(layer)
    out = layer.forward(x, training, cache=True)
    upstream = rng.standard_normal(out.shape)
    dx = layer.backward(upstream)
    analytic = {"input": dx}
    analytic.update({name: grad.copy() for name, _, grad in layer.named_params()})
    arrays = {"input": x}
    arrays.update({name: p for name, p, _ in layer.named_params()})
    loss = _loss_fn(layer, x, upstream, training, generators)
    errors = {}
    for name, array in arrays.items():
        idx = None
        if max_entries is not None and array.size > max_entries:
            idx = np.unique(np.concatenate([[0, array.size - 1],
                                            rng.choice(array.size, max_entries - 2, replace=False)]))
        numeric = numerical_gradient(loss, array, eps, idx)
        sel = slice(None) if idx is None else idx
        errors[name] = relative_error(analytic[name].reshape(-1)[sel], numeric.reshape(-1)[sel])
    layer.load_state_dict(buffers)
    for lay, state in generators:
        lay.rng.bit_generator.state = state
    return errors
