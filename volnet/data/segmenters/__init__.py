"""Two trained segmenters for the digit scenes, bundled for the ``/lecture/dilated`` page.

``dilated.safetensors`` and ``dilated-context.safetensors`` hold the weights (no
optimizer state) of ``volnet train dilated --seed 0`` and ``volnet train
dilated-context --seed 0`` (the default 8 epochs on 2,000 training scenes), the runs
whose held-out mean IoU the README reports; ``volnet evaluate`` on either reproduces it.
"""

from __future__ import annotations

from importlib import resources

from volnet.errors import ConfigError

CHECKPOINTS = {"dilated": "dilated.safetensors", "dilated-context": "dilated-context.safetensors"}


def checkpoint_path(name: str) -> str:
    """Path of the bundled checkpoint of segmenter ``name`` ("dilated" or "dilated-context")."""
    if name not in CHECKPOINTS:
        raise ConfigError(f"no bundled segmenter {name!r}; choose one of: {', '.join(CHECKPOINTS)}")
    return str(resources.files("volnet.data.segmenters") / CHECKPOINTS[name])
