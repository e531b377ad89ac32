"""Several optimizers acting as one: one per part of a network (a GAN's generator and
discriminator), each with its own hyperparameters, step count and state.

The group is what :class:`~volnet.train.trainer.Trainer` and the checkpoint code see
as "the optimizer": ``step(params, grads)`` hands every parameter to the member
whose part its name starts with; ``state`` holds every member's per-parameter
arrays (keyed by full parameter name, as a single optimizer's are);
``state_dict()`` nests each member's ``hyper`` and ``t`` under its part name, so a
checkpoint restores every member exactly. Given the parameters of one part only
(the GAN updates D, then G), ``step`` advances that part's optimizer only.
"""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, StateDictError


class OptimizerGroup:
    """One optimizer per named part of a network.

    Args:
        members: {part: optimizer}; a parameter belongs to the part its dotted
            name starts with (``"generator"`` takes ``generator.0.weight``).

    Example:
        >>> from volnet.train.optim import Adam
        >>> group = OptimizerGroup({"g": Adam(lr=2e-4), "d": Adam(lr=1e-4)})
        >>> p, grad = {"g.w": np.ones(2), "d.w": np.ones(2)}, {"g.w": np.ones(2), "d.w": np.ones(2)}
        >>> group.step({"d.w": p["d.w"]}, grad)
        >>> group.members["d"].t, group.members["g"].t
        (1, 0)
    """

    def __init__(self, members: dict) -> None:
        if not members:
            raise ConfigError("OptimizerGroup needs at least one {part: optimizer} member")
        for part in members:
            if any(other != part and (part.startswith(other + ".") or not other)
                   for other in members):
                raise ConfigError(f"OptimizerGroup: part {part!r} lies inside another part; "
                                  "name disjoint sub-networks")
        self.members = dict(members)

    def part_of(self, name: str) -> str:
        """The member a parameter name belongs to (ConfigError if none)."""
        for part in self.members:
            if not part or name == part or name.startswith(part + "."):
                return part
        raise ConfigError(f"OptimizerGroup: parameter {name} belongs to none of the parts "
                          f"{sorted(self.members)}")

    @property
    def lr(self) -> float:
        """The first member's learning rate (what progress bars and logs show)."""
        return next(iter(self.members.values())).lr

    @lr.setter
    def lr(self, value: float) -> None:
        # a schedule drives the whole group: each member keeps its ratio to the first
        first = self.lr
        for opt in self.members.values():
            opt.lr = float(value) if first == 0 else opt.lr * (float(value) / first)

    @property
    def state(self) -> dict[str, dict[str, np.ndarray]]:
        return {name: slots for opt in self.members.values() for name, slots in opt.state.items()}

    def step(self, params: dict, grads: dict) -> None:
        """Update ``params`` from ``grads``, each by the optimizer of its part; a member
        given no parameters does not step (its step count stays)."""
        split: dict[str, dict] = {}
        for name, value in params.items():
            split.setdefault(self.part_of(name), {})[name] = value
        for owner, mine in split.items():
            self.members[owner].step(mine, {n: grads[n] for n in mine if n in grads})

    def hyperparameters(self) -> dict:
        return {part: opt.hyperparameters() for part, opt in self.members.items()}

    def state_dict(self) -> dict:
        """{"type": "OptimizerGroup", "hyper": {part: {...}}, "t": {part: t}, "state": {...}}."""
        states = {part: opt.state_dict() for part, opt in self.members.items()}
        return {"type": "OptimizerGroup",
                "members": {part: s["type"] for part, s in states.items()},
                "hyper": {part: s["hyper"] for part, s in states.items()},
                "t": {part: s["t"] for part, s in states.items()},
                "state": {n: slots for s in states.values() for n, slots in s["state"].items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore every member; the parts must be the ones this group was built with."""
        if sd.get("type") != "OptimizerGroup":
            raise StateDictError(f"optimizer state is for {sd.get('type')}, not an "
                                 "OptimizerGroup; build the matching optimizer")
        hyper, t = sd.get("hyper"), sd.get("t")
        if not isinstance(hyper, dict) or not isinstance(t, dict) or set(hyper) != set(self.members) \
                or set(t) != set(self.members):
            raise StateDictError(f"optimizer state has parts {sorted(hyper or {})}, this group "
                                 f"{sorted(self.members)}")
        types = sd.get("members") or {}
        for part, opt in self.members.items():
            mine = {n: s for n, s in sd["state"].items() if self.part_of(n) == part}
            opt.load_state_dict({"type": types.get(part, type(opt).__name__),
                                 "hyper": hyper[part], "t": t[part], "state": mine})

    def __repr__(self) -> str:
        return f"OptimizerGroup({self.members!r})"
