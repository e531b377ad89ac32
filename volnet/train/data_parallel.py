"""Data-parallel training over MPI: communicator, gradient allreduce, shards, abort.

Every rank holds a full copy of the network, reads its own shard of each epoch,
computes gradients on its local batch, and averages them with the other ranks
before the optimizer step, so every rank applies the same update (Horovod's
recipe, with MPI through ``mpi4py`` as the engine; no home-made networking).

* ``get_communicator()`` returns a world of one process when MPI is absent or
  not launched, so single-process training needs nothing from this module.
* ``GradientAllreducer`` flattens the gradients into a few large contiguous
  buckets and averages each with one non-blocking ``Iallreduce``, started by the
  layers' backward hooks as soon as a bucket's gradients are all written, so
  communication overlaps the rest of backward (PyTorch DDP's and Horovod's
  schedule); waiting polls with a deadline, so a dead or hung peer raises
  ``DistributedError`` instead of hanging forever.
* Shards come from ``volnet.data.batches.BatchIterator(shard=(rank, world_size))``:
  each epoch's seeded permutation dealt round-robin, so local batch t of all
  ranks together is global batch t of one process with a W times larger batch.
* ``abort_on_error`` turns an exception on one rank into ``MPI_Abort``, which
  takes every rank down with a clear message.

Example:
    >>> from volnet.train.communicator import get_communicator
    >>> comm = get_communicator(distributed=False)
    >>> comm.rank, comm.world_size
    (0, 1)

The communicators live in ``train/communicator.py``, the gradient allreduce and
the weight broadcast in ``train/allreduce.py``, synchronised batch norm in
``train/sync_bn.py``; this module holds what puts them together.
"""

from __future__ import annotations

from volnet.errors import ConfigError
from volnet.train.allreduce import GradientAllreducer, broadcast_model
from volnet.train.communicator import Communicator


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    """Per-rank batch for a global batch; W must divide it so ranks stay in lockstep.

    Example:
        >>> local_batch_size(64, 4)
        16
    """
    if global_batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {global_batch_size}")
    if global_batch_size < world_size or global_batch_size % world_size:
        raise ConfigError(f"batch size {global_batch_size} is the global batch and must be a "
                          f"multiple of the {world_size} ranks; use e.g. "
                          f"{max(world_size, global_batch_size // world_size * world_size)}")
    return global_batch_size // world_size


def data_parallel(net, comm: Communicator, *, sync_bn: bool = False,
                  bucket_mb: float = 25.0, overlap: bool = True) -> GradientAllreducer:
    """Prepare ``net`` for data-parallel training; returns the Trainer's ``grad_hook``.

    Converts batch norm to synchronised batch norm when ``sync_bn`` and there
    is more than one rank (otherwise each rank normalises with its local batch's
    statistics, and the running statistics are averaged over the ranks every
    step), then copies rank 0's weights to every rank. ``overlap`` starts each
    gradient bucket's allreduce during backward (see ``GradientAllreducer``).

    Example:
        >>> from volnet.train.communicator import get_communicator
        >>> hook = data_parallel(vn.Linear(4, 2), get_communicator(distributed=False))
        >>> type(hook).__name__
        'GradientAllreducer'
    """
    if sync_bn and comm.world_size > 1:
        from volnet.train.sync_bn import convert_sync_batchnorm

        convert_sync_batchnorm(net, comm)
    broadcast_model(net, comm)
    return GradientAllreducer(comm, bucket_mb=bucket_mb, net=net, overlap=overlap)
