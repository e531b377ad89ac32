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
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError
from volnet.train.optim_base import _NONE, Optimizer, _h, _run

__all__ = ["OPTIMIZERS", "SGD", "Adagrad", "Adam", "Optimizer", "RMSProp", "make_optimizer"]


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
