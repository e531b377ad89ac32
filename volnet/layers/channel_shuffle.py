"""ChannelShuffle: ShuffleNet's channel permutation between grouped convolutions."""

from __future__ import annotations

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer


class ChannelShuffle(Layer):
    """Split C channels into ``groups`` groups and interleave them (Zhang et al. 2018, §3.1):
    (N, g, C/g, H, W) -> transpose the two group axes -> (N, C, H, W).

    Example:
        >>> import numpy as np
        >>> ChannelShuffle(2).forward(np.arange(4.0).reshape(1, 4, 1, 1)).ravel()
        array([0., 2., 1., 3.])
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        if int(groups) != groups or groups < 1:
            raise ConfigError(f"ChannelShuffle: groups must be a positive int, got {groups!r}")
        self.groups = int(groups)

    def output_shape(self, input_shape):
        if len(input_shape) < 1 or input_shape[0] % self.groups:
            raise ShapeError(f"{self.where()}: {input_shape[0] if input_shape else 0} channels do "
                             f"not split into {self.groups} groups (input {tuple(input_shape)})")
        return tuple(input_shape)

    def _check_input(self, x):
        if x.ndim < 2:
            self._expect_rank(x, 4, "(N, C, H, W)")
        self.output_shape(x.shape[1:])

    @staticmethod
    def _shuffle(x, groups):
        n, c, *rest = x.shape
        return (x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(x.shape))

    def _forward(self, x, training, keep_cache):
        self._cache = True if keep_cache else None
        return self._shuffle(x, self.groups)

    def _backward(self, dout):
        return self._shuffle(dout, dout.shape[1] // self.groups)   # the inverse permutation

    def extra_repr(self):
        return f"groups={self.groups}"
