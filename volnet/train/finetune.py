"""Fine-tuning: "download a pretrained model and finetune it on your data" (CS231n).

Three steps, each usable alone:

* :func:`replace_head` swaps the last ``Linear`` (the classifier) for a fresh
  one with the new class count;
* freezing by name pattern (``net.freeze("*").unfreeze("fc.*")``) keeps the
  pretrained weights out of the optimizer;
* :func:`finetune` trains what is unfrozen with the shared :class:`volnet.train.trainer.Trainer`.
  Batch-norm layers whose parameters are all frozen run in inference mode
  while training (running statistics used, not updated), as torchvision's
  ``FrozenBatchNorm2d`` does, so a frozen part is frozen completely: its
  parameters *and* buffers stay bit-identical.
"""

from __future__ import annotations

import contextlib
import fnmatch

import numpy as np

from volnet.errors import ConfigError
from volnet.layers import BatchNorm1d, BatchNorm2d, Linear
from volnet.layers.base import join_key


def find_head(net) -> str:
    """Dotted path of the classifier: the last ``Linear`` layer of ``net``.

    Example:
        >>> import volnet as vn
        >>> find_head(vn.models.lenet5())
        '11'
    """
    heads = [path for path, layer in net.named_layers() if isinstance(layer, Linear)]
    if not heads:
        raise ConfigError(f"{type(net).__name__} has no Linear layer to use as the classifier head")
    return heads[-1]


def replace_head(net, num_classes: int, rng=0) -> str:
    """Replace the classifier (last Linear) by a new one with ``num_classes`` outputs.

    The new layer keeps the old input width and dtype; returns its dotted path.

    Example:
        >>> import volnet as vn
        >>> net = vn.models.lenet5()
        >>> replace_head(net, 3), net.output_shape((1, 28, 28))
        ('11', (3,))
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    path = find_head(net)
    old = dict(net.named_layers())[path]
    # the container holding it (a Graph names children with dots: "classifier.6")
    parent, child = next((layer, name) for _, layer in net.named_layers()
                         for name, c in layer.named_children() if c is old)
    new = Linear(old.in_features, num_classes, bias="bias" in old.params, rng=rng,
                 dtype=old.params["weight"].dtype)
    try:
        parent[child] = new
    except (ConfigError, KeyError, TypeError):
        raise ConfigError(f"cannot replace the head at {path!r}: its parent "
                          f"{type(parent).__name__} does not allow replacing children") from None
    return path


def load_backbone(net, source, head: str, ignore: tuple[str, ...] = ()) -> None:
    """Load pretrained weights into everything but the (replaced) head.

    Every key of ``net`` outside ``head`` must be in ``source`` with the right
    shape, and ``source`` may hold nothing else but the old head's keys (and
    keys matching ``ignore``), so a wrong architecture still fails loudly.

    Args:
        net: the network, its head already replaced.
        source: a state dict or a ``.pth``/``.safetensors`` file.
        head: dotted path of the head; its keys in ``source`` are dropped.
    """
    from volnet.errors import StateDictError
    from volnet.io.torch_load import load_torch

    state = source if isinstance(source, dict) else load_torch(source)
    drop = (f"{head}.*",) + tuple(ignore)
    state = {k: v for k, v in state.items() if not any(fnmatch.fnmatchcase(k, p) for p in drop)}
    own = [k for k in net.state_dict() if not k.startswith(head + ".")]
    missing = [k for k in own if k not in state]
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise StateDictError(
            f"pretrained weights do not fit {type(net).__name__}: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}; is it the same architecture?")
    net.load_state_dict(state, strict=False)   # shape mismatches are still reported, all at once


class _FrozenBatchNorm:
    """Mixin: batch norm that always normalises with its running statistics.

    @public (the API reference documents it: its subclasses inherit these members)
    """

    def _forward(self, x, training, keep_cache):
        return super()._forward(x, False, keep_cache)


class FrozenBatchNorm2d(_FrozenBatchNorm, BatchNorm2d):
    """BatchNorm2d evaluated in inference mode even while the network trains."""


class FrozenBatchNorm1d(_FrozenBatchNorm, BatchNorm1d):
    """BatchNorm1d evaluated in inference mode even while the network trains."""


_FROZEN = {BatchNorm2d: FrozenBatchNorm2d, BatchNorm1d: FrozenBatchNorm1d}


@contextlib.contextmanager
def frozen_batchnorm(net, train: tuple[str, ...] | None = None):
    """Within the block, batch norms of the frozen part use their running statistics.

    A batch norm counts as frozen when none of its parameter names matches the
    ``train`` patterns or, without patterns, when its (affine) parameters are
    all frozen. The layers' classes are switched and restored afterwards, so
    the network saves and exports exactly as before.
    """
    switched = []
    for path, layer in net.named_layers():
        cls = type(layer)
        if cls not in _FROZEN:
            continue
        if train is not None:
            keys = [join_key(path, name) for name in layer.params]
            frozen = not any(fnmatch.fnmatchcase(k, p) for k in keys for p in train)
        else:
            frozen = layer.affine and set(layer.params) <= layer.frozen
        if frozen:
            layer.__class__ = _FROZEN[cls]
            switched.append((layer, cls))
    try:
        yield [layer for layer, _ in switched]
    finally:
        for layer, cls in switched:
            layer.__class__ = cls


def finetune(net, x, y, *, num_classes: int | None = None, train: tuple[str, ...] | None = None,
             epochs: int = 5, batch_size: int = 32, optimizer=None, val=None, seed: int = 0,
             mean=None, std=None, progress: bool = False, callbacks=(), **batch_options):
    """Fine-tune ``net`` on images ``x``, labels ``y``: new head, frozen body, Trainer.

    Args:
        net: a (pretrained) network whose classifier is its last Linear layer.
        x: images (N, C, H, W), uint8 0-255 or float 0-1.
        y: integer labels (N,).
        num_classes: replace the head by a fresh one with this many outputs
            (None keeps the current head).
        train: glob patterns of the parameters to train; everything else is
            frozen. Default: the head only (``"fc.*"`` for ResNet).
            ``("*",)`` trains everything.
        epochs, batch_size, optimizer, val, seed, mean, std, callbacks:
            as for :func:`volnet.fit` (default optimizer: Adam, lr 1e-3); ``val``
            is (x_val, y_val) in the format of ``x``, normalised like it.
        **batch_options: ``crop_padding``, ``flip`` (augmentation).

    Returns:
        The training history; ``net`` is changed in place.
    """
    from volnet.data.batches import BatchIterator
    from volnet.train.fit import validation_batches
    from volnet.train.optim import Adam
    from volnet.train.trainer import Trainer

    head = replace_head(net, num_classes, rng=seed) if num_classes else find_head(net)
    train = tuple(train or (f"{head}.*",))
    net.freeze("*")
    net.unfreeze(*train)
    if not any(True for _ in net.named_params(trainable_only=True)):
        raise ConfigError(f"the patterns {train} match no parameter; nothing would be trained")
    batches = BatchIterator(np.asarray(x), np.asarray(y), batch_size, seed=seed, mean=mean,
                            std=std, **batch_options)
    trainer = Trainer(net, optimizer or Adam(lr=1e-3), callbacks=callbacks, progress=progress)
    with frozen_batchnorm(net, train):
        return trainer.fit(batches, epochs, val=validation_batches(val, batches))

