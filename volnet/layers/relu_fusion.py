"""The ReLU-fusion protocol of layers whose kernels can rectify their own output.

Sequential pairs such a layer with the ReLU right after it (unless the kernels are pinned
to NumPy, and only while no hook watches either) and calls :meth:`ReLUFusion.forward_relu`: the ReLU is
applied in the same pass that writes the output (batch norm's normalise kernel, a
convolution's bias epilogue or Winograd output transform) and the ReLU layer is skipped.
The backward of such a forward is :meth:`ReLUFusion.backward_relu`.
"""

from __future__ import annotations

from volnet.errors import ConfigError, StateError


class ReLUFusion:
    """Mixin for a Layer whose ``_forward`` honours ``self._relu`` (rectify its output) and
    whose cache records it."""

    fuses_relu = True       # forward_relu/backward_relu available
    _relu = False           # set only while forward_relu/backward_relu run

    def forward_relu(self, x, training=False, *, cache=None):
        """``relu(self.forward(x, ...))`` in one pass: this layer and the ReLU after it.

        Same values as the two layers one after the other. The backward of such a
        forward is :meth:`backward_relu`, which takes the gradient of the *rectified*
        output (a plain ``backward`` then raises, and vice versa). Sequential calls
        this unless the kernels are pinned to NumPy; the ReLU layer stays in the network
        (names, keys, summaries) but is skipped.
        """
        if not self.fuses_relu:
            raise ConfigError(f"{self.where()} cannot fuse the ReLU; call forward, then ReLU")
        self._relu = True
        try:
            return self.forward(x, training, cache=cache)
        finally:
            self._relu = False

    def inference_relu(self, x):
        """``relu(self.forward_planned(x))`` in one pass: no checks, cache or hooks (an
        inference plan's step; see :meth:`volnet.layers.base.Layer.forward_planned`)."""
        self._relu = True
        try:
            return self._forward(x, False, False)
        finally:
            self._relu = False

    def backward_relu(self, dout, input_grad=True):
        """Backward of :meth:`forward_relu`: ``dout`` is the gradient of the rectified output."""
        self._relu = True
        try:
            return self.backward(dout, input_grad)
        finally:
            self._relu = False

    def _check_relu_cache(self, cached_relu: bool) -> None:
        """Refuse a backward that does not match the last forward's ReLU fusion."""
        if cached_relu != self._relu:
            raise StateError(f"{self.where()}: the last forward was "
                             + ("forward_relu; call backward_relu" if not self._relu
                                else "forward without the ReLU; call backward"))
