"""SideBranch: an auxiliary classifier hanging off the main path (GoogLeNet, Inception v3).

The main path passes through unchanged; while training the head also runs on
the same volume and keeps its scores in ``output``. To train the head, set
``grad`` to the gradient of its loss (e.g. 0.3 times the auxiliary
cross-entropy gradient, as GoogLeNet does) before calling ``backward`` on the
whole network: the head's input gradient is then added to the main path's.
"""

from __future__ import annotations

from volnet.errors import ShapeError
from volnet.layers.base import Layer
from volnet.layers.parameter import ContainerParams


class SideBranch(Layer):
    """Identity on the main path plus a head evaluated on the side while training.

    Args:
        head: the auxiliary network; its state-dict keys are spliced into this
            layer's (torchvision's ``aux1.conv.conv.weight``).
        in_training: run the head in training-mode forwards (default True); it
            never runs at inference, so eval outputs are the main path's alone.

    Example:
        >>> import volnet as vn
        >>> tap = SideBranch(vn.Sequential(vn.Flatten(), vn.Linear(12, 2)))
        >>> x = np.ones((4, 3, 2, 2), dtype=np.float32)
        >>> tap.forward(x, training=True).shape, tap.output.shape
        ((4, 3, 2, 2), (4, 2))
    """

    def __init__(self, head: Layer, in_training: bool = True) -> None:
        super().__init__()
        self.params = ContainerParams(type(self).__name__, "params")   # arrays live in head
        self.grads = ContainerParams(type(self).__name__, "grads")
        self.head, self.in_training = head, bool(in_training)
        self.output = None      # the head's scores from the last training forward
        self.grad = None        # set by the caller: dL_aux / d(output)
        self._set_path(self.path)

    def named_children(self):
        return [("", self.head)]

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def head_output_shape(self, input_shape):
        """Shape of the head's scores for a per-example main-path shape."""
        return self.head.output_shape(input_shape)

    def _forward(self, x, training, keep_cache):
        run = training and self.in_training
        self.output = self.head.forward(x, training, cache=keep_cache) if run else None
        self.grad = None
        self._cache = run if keep_cache else None
        return x

    def _backward(self, dout):
        if self.grad is None:
            return dout
        if not self._cache:
            raise ShapeError(f"{self.where()}: grad was set but the head did not run in the last "
                             "forward; use forward(x, training=True)")
        grad, self.grad = self.grad, None
        return dout + self.head.backward(grad)

    def _backward_params(self, dout):
        if self.grad is None:
            return
        if not self._cache:
            raise ShapeError(f"{self.where()}: grad was set but the head did not run in the last "
                             "forward; use forward(x, training=True)")
        grad, self.grad = self.grad, None
        self.head.backward(grad, input_grad=False)
