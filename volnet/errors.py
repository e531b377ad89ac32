"""One exception hierarchy for everything volnet raises on purpose.

Every error is a ``VolnetError`` and also the builtin a caller would expect
(``ValueError`` for bad values and shapes, ``TypeError`` for bad types), so
``except ValueError`` keeps working. No ``assert`` is used for checks: asserts
vanish under ``python -O``.
"""


class VolnetError(Exception):
    """Base class of every error volnet raises deliberately."""


class ShapeError(VolnetError, ValueError):
    """An array has the wrong rank, channel count or size for a layer."""


class DTypeError(VolnetError, TypeError):
    """An array has a dtype the operation cannot use (e.g. integers)."""


class ConfigError(VolnetError, ValueError):
    """An impossible hyperparameter or configuration."""


class NonFiniteError(VolnetError, ValueError):
    """NaN or infinity where finite numbers are required."""


class StateError(VolnetError, RuntimeError, ValueError):
    """A method called out of order, e.g. ``backward`` before ``forward``."""


class StateDictError(VolnetError, ValueError):
    """A state dict does not fit the network (missing, unexpected or mis-shaped keys)."""


class CheckpointError(VolnetError, ValueError):
    """A checkpoint or weight file is truncated, forged or inconsistent."""


class DataError(VolnetError, ValueError):
    """A dataset file is malformed, truncated or inconsistent."""


class TrainingDivergedError(VolnetError, RuntimeError):
    """The loss or the gradients became NaN or infinite during training."""


class BudgetError(VolnetError, ValueError):
    """An input would need more memory than the budget allows (``volnet.limits``).

    Readers raise a class that is both their own error (``CheckpointError``,
    ``DataError``, ``ConfigError``) and this one, so either ``except`` catches it.
    """
