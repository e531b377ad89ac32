"""ChannelAffine: a fixed per-channel scale and shift (no parameters, no state-dict keys)."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer

# ImageNet statistics (torchvision's transforms.Normalize defaults)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ChannelAffine(Layer):
    """``out[:, c] = x[:, c] * scale[c] + shift[c]`` with constants, as a layer.

    Used for torchvision's ``transform_input`` in GoogLeNet and Inception v3:
    Google's weights expect pixels scaled to [-1, 1], while torchvision feeds
    ImageNet-normalised images; this maps one to the other. The constants are
    not parameters or buffers, so the layer adds no state-dict keys.

    Args:
        scale: one factor per channel.
        shift: one offset per channel.

    Example:
        >>> layer = ChannelAffine((2.0, 1.0), (0.0, -1.0))
        >>> layer.forward(np.ones((1, 2, 1, 1)))[0, :, 0, 0]
        array([2., 0.])
    """

    def __init__(self, scale, shift) -> None:
        super().__init__()
        self.scale = tuple(float(v) for v in scale)
        self.shift = tuple(float(v) for v in shift)
        if len(self.scale) != len(self.shift) or not self.scale:
            raise ConfigError(f"ChannelAffine: scale and shift need one value per channel, got "
                              f"{len(self.scale)} and {len(self.shift)}")

    @classmethod
    def imagenet_to_unit_range(cls) -> ChannelAffine:
        """ImageNet-normalised input -> (pixel - 0.5) / 0.5, torchvision's ``_transform_input``."""
        return cls([s / 0.5 for s in IMAGENET_STD], [(m - 0.5) / 0.5 for m in IMAGENET_MEAN])

    def _check_input(self, x):
        if x.ndim < 2 or x.shape[1] != len(self.scale):
            raise ShapeError(f"{self.where()} expects (N, {len(self.scale)}, ...) input, got "
                             f"shape {x.shape}")

    def output_shape(self, input_shape):
        if input_shape[0] != len(self.scale):
            raise ShapeError(f"{self.where()} expects {len(self.scale)} channels, got input "
                             f"shape {tuple(input_shape)}")
        return tuple(input_shape)

    def _per_channel(self, values, x):
        return np.asarray(values, dtype=x.dtype).reshape((1, -1) + (1,) * (x.ndim - 2))

    def _forward(self, x, training, keep_cache):
        self._cache = self._per_channel(self.scale, x) if keep_cache else None
        return x * self._per_channel(self.scale, x) + self._per_channel(self.shift, x)

    def _backward(self, dout):
        return dout * self._cache.astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"scale={self.scale}, shift={self.shift}"
