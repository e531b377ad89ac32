"""The one hook point of every layer's forward and backward.

Three jobs watch a network run, and all of them use this module, never a
private walk of their own:

* anomaly mode (``vn.detect_anomaly()``) checks every layer's output and input
  gradient for NaN or infinity and names the first layer and pass that made one;
* data-parallel training starts a bucket's allreduce as soon as the layers whose
  gradients fill it have finished their backward ("gradients ready");
* an execution plan that runs a network's layers in its own loop calls
  :func:`after_forward` and :func:`after_backward` for each layer it runs, so the
  first two keep working whatever runs the layers.

Hooks come in two scopes, as PyTorch's do:

* per layer, ``layer.register_forward_hook(fn)`` / ``layer.register_backward_hook(fn)``
  (``torch.nn.Module.register_forward_hook`` / ``register_full_backward_hook``);
* global, :func:`register_forward_hook` / :func:`register_backward_hook`, seen by
  every layer in the process (``torch.nn.modules.module.register_module_forward_hook``).

Signatures: ``forward_hook(layer, x, out, training)`` runs after ``layer.forward``
computed ``out`` from ``x``; ``backward_hook(layer, dout, dx)`` runs after
``layer.backward`` wrote ``layer.grads`` (``dx`` is None when the input gradient
was skipped with ``input_grad=False``). A container's hooks run after all of its
children's. A hook's return value is ignored; a hook may raise to stop the pass.

Example:
    >>> import volnet as vn
    >>> seen = []
    >>> net = vn.Sequential(vn.Linear(3, 2), vn.ReLU())
    >>> handle = net[0].register_forward_hook(lambda layer, x, out, training: seen.append(out.shape))
    >>> _ = net.forward(np.ones((4, 3), dtype=np.float32))
    >>> seen
    [(4, 2)]
    >>> handle.remove()
"""

from __future__ import annotations

import itertools
import threading

_ids = itertools.count()
_lock = threading.Lock()
# global hooks: replaced (never mutated) under the lock, so a running pass reads one snapshot
_forward: dict[int, object] = {}
_backward: dict[int, object] = {}
# per-layer hooks registered and not yet removed, over every layer: while none is, no
# layer can have one, and an inference plan skips asking each of its layers (281 in
# GoogLeNet) on every call
_layer_hooks = {"count": 0}


class HookHandle:
    """Returned by every ``register_*`` call; ``remove()`` unregisters the hook (idempotent).

    Also a context manager: ``with net.register_backward_hook(fn): ...`` removes on exit.
    """

    def __init__(self, remove) -> None:
        self._remove = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _add_global(kind: str, fn) -> HookHandle:
    global _forward, _backward
    key = next(_ids)
    with _lock:
        if kind == "forward":
            _forward = {**_forward, key: fn}
        else:
            _backward = {**_backward, key: fn}

    def remove():
        global _forward, _backward
        with _lock:
            if kind == "forward":
                _forward = {k: f for k, f in _forward.items() if k != key}
            else:
                _backward = {k: f for k, f in _backward.items() if k != key}

    return HookHandle(remove)


def register_forward_hook(fn) -> HookHandle:
    """Run ``fn(layer, x, out, training)`` after the forward of every layer in the process."""
    return _add_global("forward", fn)


def register_backward_hook(fn) -> HookHandle:
    """Run ``fn(layer, dout, dx)`` after the backward of every layer in the process."""
    return _add_global("backward", fn)


def add_layer_hook(hooks: dict, fn) -> HookHandle:
    """Add ``fn`` to one layer's hook dict (``layer._forward_hooks`` or ``_backward_hooks``)."""
    key = next(_ids)
    with _lock:
        hooks[key] = fn
        _layer_hooks["count"] += 1

    def remove():
        with _lock:
            if key in hooks:
                del hooks[key]
                _layer_hooks["count"] -= 1

    return HookHandle(remove)


def any_layer_hooks() -> bool:
    """Whether some layer, anywhere, may have a hook of its own (False: none has)."""
    return _layer_hooks["count"] > 0


def active(layer) -> bool:
    """True when any hook (global or on ``layer``) is registered: the fast path skips the rest."""
    return bool(_forward or _backward or layer._forward_hooks or layer._backward_hooks)


def after_forward(layer, x, out, training: bool) -> None:
    """Call the forward hooks for one layer's finished forward (global ones first)."""
    for fn in tuple(_forward.values()) + tuple(layer._forward_hooks.values()):
        fn(layer, x, out, training)


def after_backward(layer, dout, dx) -> None:
    """Call the backward hooks for one layer whose ``grads`` are now written (global first)."""
    for fn in tuple(_backward.values()) + tuple(layer._backward_hooks.values()):
        fn(layer, dout, dx)
