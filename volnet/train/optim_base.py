"""The optimizer base class: hyperparameter checks, parameter binding, per-parameter state.

The update rules themselves (SGD, Adam, RMSProp, Adagrad) live in
:mod:`volnet.train.optim`, which re-exports :class:`Optimizer`.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, StateDictError, StateError
from volnet.layers.base import Layer
from volnet.layers.parameter import ContainerParams, collect
from volnet.runtime import backend, launch

_NONE = np.zeros(0)


def _fast(p, *arrays) -> bool:
    """Whether the compiled update takes this parameter: numba on, one float dtype, contiguous."""
    return (p.dtype in (np.float32, np.float64) and p.flags.c_contiguous
            and all(a.dtype == p.dtype and a.flags.c_contiguous for a in arrays)
            and backend.compiled(p.size))


def _h(p, *values) -> np.ndarray:
    """Hyperparameters in the parameter's dtype, as NumPy converts Python floats."""
    return np.array(values, dtype=p.dtype)


def _run(name, p, g, *rest):
    """Compiled update ``name`` on the flattened parameter, gradient and state arrays."""
    launch.run("volnet.functional.compiled.optim", name, p.size, p.reshape(-1), g.reshape(-1),
               *(a.reshape(-1) if isinstance(a, np.ndarray) and a.ndim != 1 else a for a in rest))


class Optimizer:
    """Base class: validates hyperparameters, owns per-parameter state and the step count."""

    slots: tuple[str, ...] = ()          # names of the per-parameter state arrays

    def __init__(self, lr: float, weight_decay: float = 0.0, params=None) -> None:
        if not isinstance(lr, (int, float, np.floating, np.integer)) or isinstance(lr, bool):
            raise ConfigError(f"{type(self).__name__}: lr must be a number, got "
                              f"{type(lr).__name__}; write {type(self).__name__}(net, lr=0.01)")
        if not lr > 0:
            raise ConfigError(f"{type(self).__name__}: lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"{type(self).__name__}: weight_decay must be >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0                                         # completed steps
        self.state: dict[str, dict[str, np.ndarray]] = {}  # param name -> slot -> array
        # what step() updates when called without arguments: a network (its
        # parameters are looked up at every step) or a fixed list of handles
        self._source = None if params is None else (
            params if isinstance(params, Layer) else collect(params))

    def _bound(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        name = type(self).__name__
        if self._source is None:
            raise ConfigError(
                f"{name}.step() without arguments needs the parameters: build it as "
                f"{name}(net, lr={self.lr}) (or {name}(net.parameters(), lr={self.lr})), or call "
                "step(params, grads) with dicts from net.named_params(trainable_only=True)")
        handles = collect(self._source)
        live = [h for h in handles if not h.frozen]
        if not live:
            raise ConfigError(f"{name}.step(): every parameter is frozen; call net.unfreeze(...) "
                              "for the layers to train")
        return ({h.name: h.data for h in live},
                {h.name: h.grad for h in live if h.grad is not None})

    def zero_grad(self) -> None:
        """Forget the bound parameters' gradients, so a step without a new backward fails.

        Not needed between steps (``backward`` overwrites gradients); it only makes
        a forgotten ``backward`` an error instead of a repeated update.
        """
        if self._source is None:
            raise ConfigError(f"{type(self).__name__}.zero_grad() needs an optimizer built "
                              f"as {type(self).__name__}(net, lr=...)")
        for h in collect(self._source):
            h.layer.grads.pop(h.key, None)

    def step(self, params: dict[str, np.ndarray] | None = None,
             grads: dict[str, np.ndarray] | None = None) -> None:
        """Update the parameters in place from their gradients.

        ``step()`` updates the network (or parameters) the optimizer was built
        with; ``step(params, grads)`` updates every array in ``params`` from the
        entry of the same name in ``grads``.
        """
        if params is None and grads is None:
            params, grads = self._bound()
        elif params is None or grads is None:
            raise ConfigError(f"{type(self).__name__}.step() takes both params and grads, or "
                              "neither (for an optimizer built with the network)")
        for given in (params, grads):
            if isinstance(given, ContainerParams):
                raise ConfigError(f"{type(self).__name__}.step(): {given.advice()}")
        if not params:
            raise ConfigError(f"{type(self).__name__}.step() got no parameters to update; "
                              f"build it as {type(self).__name__}(net, lr={self.lr}) and call "
                              "step() after backward")
        self.t += 1
        for name, p in params.items():
            g = grads.get(name)
            if g is None:
                raise StateError(f"no gradient for parameter {name}; run forward(training=True) "
                                 "and backward before optimizer.step")
            if g.shape != p.shape:
                raise ConfigError(f"{type(self).__name__}: gradient of {name} has shape "
                                  f"{g.shape}, parameter has {p.shape}")
            state = self.state.get(name)
            if state is None:
                state = self.state[name] = {s: np.zeros_like(p) for s in self.slots}
            if _fast(p, g, *state.values()):
                self._compiled_update(p, g, state)
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p
            self._update(p, g, state)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _update (the NumPy "
                                  "update rule every optimizer has)")

    def _compiled_update(self, p, g, state) -> None:
        """The same update, one compiled pass (``functional/compiled/optim.py``); an optimizer
        without a compiled kernel runs its NumPy rule."""
        self._update(p, g, state)

    def hyperparameters(self) -> dict:
        """JSON-serialisable constructor arguments (lr included)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> dict:
        """{"type", "hyper", "t", "state": {param: {slot: array}}} with copied arrays."""
        return {"type": type(self).__name__, "hyper": self.hyperparameters(), "t": self.t,
                "state": {n: {s: a.copy() for s, a in st.items()} for n, st in self.state.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the step count, hyperparameters and per-parameter state."""
        if sd.get("type") != type(self).__name__:
            raise StateDictError(f"optimizer state is for {sd.get('type')}, not "
                                 f"{type(self).__name__}; build the matching optimizer")
        for name, st in sd["state"].items():
            if set(st) != set(self.slots):
                raise StateDictError(f"{type(self).__name__}: state of {name} has slots "
                                     f"{sorted(st)}, expected {sorted(self.slots)}")
        for key, value in sd.get("hyper", {}).items():
            setattr(self, key, value)
        self.t = int(sd["t"])
        self.state = {n: {s: np.array(a) for s, a in st.items()} for n, st in sd["state"].items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"
