"""Zoo test helpers: cheap construction for shape-only tests and torch weight copying."""

import numpy as np
import pytest
import torch

from volnet import init


@pytest.fixture
def lazy_init(monkeypatch):
    """Skip drawing random weights: counts and shapes do not depend on the values.

    ``np.zeros`` of a large array is lazy (untouched pages cost nothing), so a
    138 M-parameter VGG builds in milliseconds instead of seconds.
    """
    monkeypatch.setattr(init, "he_normal", lambda shape, rng, dtype=np.float32: np.zeros(shape, dtype))


def randomise_norm_stats(net, rng):
    """Give every batch norm non-trivial statistics and affine parameters (eval parity)."""
    for _, layer in net.named_layers():
        if "running_mean" in layer.buffers:
            c = layer.buffers["running_mean"].shape
            layer.buffers["running_mean"][...] = rng.normal(0, 0.1, c)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["weight"][...] = rng.uniform(0.5, 1.5, c)
            layer.params["bias"][...] = rng.normal(0, 0.1, c)


def copy_into_torch(net, module: torch.nn.Module) -> torch.nn.Module:
    """Load volnet's state dict into a torch module by key (strict: keys must match exactly)."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()}
    module.double().load_state_dict(state, strict=True)   # double first: no float32 rounding
    return module.eval()


def torch_forward(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    if isinstance(out, tuple):      # (main, aux...) from the Inception references
        return tuple(None if o is None else o.numpy() for o in out)
    return out.numpy()
