"""Name -> builder table used by the CLI and the demo. Each builder takes keyword
arguments ``num_classes``, ``in_channels`` and ``seed`` at least."""

from __future__ import annotations

from volnet.models.lenet import cifar_example, lenet5

MODELS = {
    "lenet5": lenet5,
    "cifar_example": cifar_example,
}

# Per-example input shape each model expects by default (C, H, W).
INPUT_SHAPES = {
    "lenet5": (1, 28, 28),
    "cifar_example": (3, 32, 32),
}


def build(name: str, **kwargs):
    """Build a registered model by name, with a clear error listing the names."""
    from volnet.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
