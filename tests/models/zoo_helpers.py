"""Zoo test helpers: torch weight copying and forwards (batch norm statistics:
``batch_norm_stats.py``).

A module with its own name (not conftest.py), so ``from zoo_helpers import ...``
never picks up another directory's conftest.
"""

import numpy as np
import torch

from volnet.layers.base import join_key


def copy_into_torch(net, factory) -> torch.nn.Module:
    """Build ``factory()`` without initialising it and give it volnet's arrays by key.

    ``strict=True``: the keys must match exactly. Parameters are shared with volnet
    (no copy of a 60 M-weight model), buffers are copied since torch updates them in
    place in training mode.
    """
    state = {}
    for path, layer in net.named_layers():
        for name, value in layer.params.items():
            state[join_key(path, name)] = torch.from_numpy(value)
        for name, value in layer.buffers.items():
            state[join_key(path, name)] = torch.from_numpy(value.copy())
    with torch.device("meta"):      # skip torch's own (slow, discarded) initialisation
        module = factory()
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()


def torch_forward(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    if isinstance(out, tuple):      # (main, aux...) from the Inception references
        return tuple(None if o is None else o.numpy() for o in out)
    return out.numpy()
