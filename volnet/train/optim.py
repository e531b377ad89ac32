"""Update rules: one class per rule, state kept in the optimizer (CS231n, PyTorch formulas).

Build an optimizer from the network (or its parameters) and step it after
each backward, as in PyTorch::

    opt = SGD(net, lr=0.01, momentum=0.9)      # or SGD(net.parameters(), ...)
    scores = net.forward(x, training=True)
    loss, dscores = softmax_cross_entropy(scores, labels)
    net.backward(dscores)
    opt.step()                                 # updates every trainable parameter in place

The explicit form, used by :class:`~volnet.train.trainer.Trainer` and MPI
training, takes the arrays by name::

    opt = SGD(lr=0.01)
    named = list(net.named_params(trainable_only=True))
    opt.step({n: p for n, p, _ in named}, {n: g for n, _, g in named})

A container's own ``net.params`` is empty (its arrays live in its layers), so
``opt.step(net.params, net.grads)`` is refused with the right call in the
message rather than silently updating nothing.

State (momentum buffers, Adam moments, step count) is keyed by parameter name,
so it travels in checkpoints and resumes exactly. ``weight_decay`` is L2
regularisation added to the gradient, as in ``torch.optim`` (so results agree
step for step with PyTorch).

Gradients: ``backward`` *overwrites* them (PyTorch's adds), so one backward per
step needs no ``zero_grad``. For gradient accumulation over micro-batches, pass
``accumulate=True`` to every backward after the first::

    for i, (xb, yb) in enumerate(micro_batches):
        loss, dscores = softmax_cross_entropy(net.forward(xb, training=True), yb)
        net.backward(dscores / len(micro_batches), accumulate=i > 0)
    opt.step()

PyTorch's way of writing it (``zero_grad()``, several plain ``backward`` calls,
one ``step()``) would silently use only the last micro-batch here, so
``step()`` refuses it: it raises a ``StateError`` naming ``accumulate=True``
when a parameter's gradient was overwritten by more than one backward since
the optimizer was built, its last ``step()`` or ``zero_grad()``. Backward calls
that no ``step()`` follows (a gradient check, saliency maps) are never checked;
after such calls, ``zero_grad()`` starts a training step afresh.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, StateDictError, StateError
from volnet.functional import backend
from volnet.layers.base import Layer
from volnet.layers.parameter import ContainerParams, collect

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "Optimizer", "RMSProp", "make_optimizer"]

_NONE = np.zeros(0)


def _fast(p, *arrays) -> bool:
    """Whether the compiled update takes this parameter: numba on, one float dtype, contiguous."""
    return (p.dtype in (np.float32, np.float64) and p.flags.c_contiguous
            and all(a.dtype == p.dtype and a.flags.c_contiguous for a in arrays)
            and backend.compiled())


def _h(p, *values) -> np.ndarray:
    """Hyperparameters in the parameter's dtype, as NumPy converts Python floats."""
    return np.array(values, dtype=p.dtype)


def _run(name, p, g, *rest):
    from volnet.functional.compiled import launch
    from volnet.functional.compiled import optim as kernels

    launch.run(getattr(kernels, name), p.size, p.reshape(-1), g.reshape(-1),
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
        if self._source is not None:
            self._consumed(collect(self._source))

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
        self._check_one_backward(live)
        return ({h.name: h.data for h in live},
                {h.name: h.grad for h in live if h.grad is not None})

    def _check_one_backward(self, handles) -> None:
        """Refuse PyTorch-style accumulation: plain backward calls overwrite, so a step after
        several would silently use only the last one."""
        name = type(self).__name__
        layers = {id(h.layer): (h.name.rpartition(".")[0] or h.name, h.layer) for h in handles}
        repeated = [(where, layer.grad_backwards) for where, layer in layers.values()
                    if layer.grad_overwrites]
        if repeated:
            where, count = repeated[0]
            others = f" (and {len(repeated) - 1} more layers)" if len(repeated) > 1 else ""
            raise StateError(
                f"{name}.step(): {count} backward calls since the last step or zero_grad() "
                f"overwrote each other's gradients of {where}{others}, so this step would use "
                f"only the last one. volnet's backward overwrites gradients (PyTorch's adds): "
                f"to accumulate micro-batches, call backward(dout, accumulate=True) for every "
                f"one after the first; for one batch per step, call {name}.step() after each "
                f"backward. If the earlier calls were a check (gradcheck, saliency), call "
                f"{name}.zero_grad() before this step's backward")

    @staticmethod
    def _consumed(handles) -> None:
        """The bound layers' gradients are used up: the next backward starts a new count."""
        for h in handles:
            h.layer.mark_grads_used()

    def zero_grad(self) -> None:
        """Forget the bound parameters' gradients, so a step without a new backward fails.

        Not needed between steps (``backward`` overwrites gradients); it only makes
        a forgotten ``backward`` an error instead of a repeated update. It does not
        make plain ``backward`` calls add up: pass ``accumulate=True`` for that
        (``step()`` refuses a gradient overwritten by several backward calls).
        """
        if self._source is None:
            raise ConfigError(f"{type(self).__name__}.zero_grad() needs an optimizer built "
                              f"as {type(self).__name__}(net, lr=...)")
        handles = collect(self._source)
        for h in handles:
            h.layer.grads.pop(h.key, None)
        self._consumed(handles)

    def step(self, params: dict[str, np.ndarray] | None = None,
             grads: dict[str, np.ndarray] | None = None) -> None:
        """Update the parameters in place from their gradients.

        ``step()`` updates the network (or parameters) the optimizer was built
        with; ``step(params, grads)`` updates every array in ``params`` from the
        entry of the same name in ``grads``.
        """
        bound = params is None and grads is None
        if bound:
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
        if bound:
            self._consumed(collect(self._source))

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


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``v = momentum * v + g`` (PyTorch's form, no dampening); the update is
    ``p -= lr * v``, or ``p -= lr * (g + momentum * v)`` with ``nesterov``.

    Args:
        params: the network, or ``net.parameters()``, that ``step()`` updates;
            None for an optimizer stepped with explicit ``step(params, grads)``.
        lr: Learning rate.
        momentum: Velocity decay in [0, 1). Default 0 (plain SGD).
        nesterov: Use Nesterov's look-ahead gradient (needs momentum > 0).
        weight_decay: L2 penalty added to the gradient.

    Example:
        >>> import volnet as vn
        >>> net = vn.Sequential(vn.Linear(2, 1, rng=0))
        >>> opt = SGD(net, lr=0.1)
        >>> w = net[0].params["weight"].copy()
        >>> x = np.ones((1, 2), dtype=np.float32)
        >>> _ = net.forward(x, training=True)
        >>> _ = net.backward(np.ones((1, 1), dtype=np.float32))   # dL/dw = x = [1, 1]
        >>> opt.step()
        >>> (net[0].params["weight"] - w).round(6)
        array([[-0.1, -0.1]], dtype=float32)
        >>> p = {"w": np.array([1.0])}                # the explicit form
        >>> SGD(lr=0.1).step(p, {"w": np.array([2.0])})
        >>> p["w"]
        array([0.8])
    """

    def __init__(self, params=None, lr: float = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay, params)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"SGD: momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ConfigError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slots = ("momentum_buffer",) if momentum else ()

    def _update(self, p, g, state):
        if not self.momentum:
            p -= self.lr * g
            return
        v = state["momentum_buffer"]
        # The buffer starts at zero, so the first step gives v = g, as PyTorch's does.
        v *= self.momentum
        v += g
        p -= self.lr * (g + self.momentum * v if self.nesterov else v)

    def _compiled_update(self, p, g, state):
        v = state.get("momentum_buffer", _NONE.astype(p.dtype))
        _run("sgd", p, g, v, _h(p, self.weight_decay, self.lr, self.momentum),
             bool(self.momentum), self.nesterov)

    def hyperparameters(self):
        return {**super().hyperparameters(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias-corrected first and second moments.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``; the
    corrections *divide* (ConvNetJS multiplied, a bug for years).

    Example:
        >>> p = {"w": np.array([1.0])}
        >>> Adam(lr=0.1).step(p, {"w": np.array([5.0])})   # first step moves by ~lr
        >>> p["w"].round(6)
        array([0.9])
    """

    slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params=None, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay, params)
        if not all(0.0 <= b < 1.0 for b in betas) or eps <= 0:
            raise ConfigError(f"Adam: need 0 <= betas < 1 and eps > 0, got betas={betas}, eps={eps}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def _update(self, p, g, state):
        b1, b2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** self.t)
        v_hat = v / (1 - b2 ** self.t)
        p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def _compiled_update(self, p, g, state):
        b1, b2 = self.betas
        _run("adam", p, g, state["exp_avg"], state["exp_avg_sq"],
             _h(p, self.weight_decay, self.lr, b1, 1 - b1, b2, 1 - b2, 1 - b1 ** self.t,
                1 - b2 ** self.t, self.eps))

    def hyperparameters(self):
        return {**super().hyperparameters(), "betas": list(self.betas), "eps": self.eps}

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        self.betas = tuple(self.betas)


class RMSProp(Optimizer):
    """RMSProp (Hinton): ``v = alpha v + (1 - alpha) g^2``, ``p -= lr g / (sqrt(v) + eps)``.

    Example:
        >>> p = {"w": np.array([1.0])}
        >>> RMSProp(lr=0.01, alpha=0.99).step(p, {"w": np.array([1.0])})
        >>> p["w"].round(4)   # 1 - 0.01 / sqrt(0.01)
        array([0.9])
    """

    slots = ("square_avg",)

    def __init__(self, params=None, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay, params)
        if not 0.0 <= alpha < 1.0 or eps <= 0:
            raise ConfigError(f"RMSProp: need 0 <= alpha < 1 and eps > 0, got alpha={alpha}, eps={eps}")
        self.alpha, self.eps = float(alpha), float(eps)

    def _update(self, p, g, state):
        v = state["square_avg"]
        v *= self.alpha
        v += (1 - self.alpha) * g * g
        p -= self.lr * g / (np.sqrt(v) + self.eps)

    def _compiled_update(self, p, g, state):
        _run("rmsprop", p, g, state["square_avg"],
             _h(p, self.weight_decay, self.lr, self.alpha, 1 - self.alpha, self.eps))

    def hyperparameters(self):
        return {**super().hyperparameters(), "alpha": self.alpha, "eps": self.eps}


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): ``s += g^2``, ``p -= lr g / (sqrt(s) + eps)``.

    Example:
        >>> p = {"w": np.array([1.0])}
        >>> Adagrad(lr=0.5).step(p, {"w": np.array([3.0])})
        >>> p["w"].round(6)
        array([0.5])
    """

    slots = ("sum",)

    def __init__(self, params=None, lr: float = 0.01, eps: float = 1e-10,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay, params)
        if eps <= 0:
            raise ConfigError(f"Adagrad: eps must be > 0, got {eps}")
        self.eps = float(eps)

    def _update(self, p, g, state):
        s = state["sum"]
        s += g * g
        p -= self.lr * g / (np.sqrt(s) + self.eps)

    def _compiled_update(self, p, g, state):
        _run("adagrad", p, g, state["sum"], _h(p, self.weight_decay, self.lr, self.eps))

    def hyperparameters(self):
        return {**super().hyperparameters(), "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "rmsprop": RMSProp, "adagrad": Adagrad}


def make_optimizer(name: str, **kwargs) -> Optimizer:
    """Build an optimizer by its CLI name (sgd, adam, rmsprop, adagrad)."""
    if name.lower() not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name.lower()](**kwargs)
