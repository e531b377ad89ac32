"""ConstantOp: x + c, x - c, x * c, x / c (or c - x, c / x), max(x, c), min(x, c) with a fixed
array c broadcast NumPy-style, as ONNX's Add/Sub/Mul/Div/Max/Min with a constant operand
compute them."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError, ShapeError
from volnet.layers.base import Layer

OPS = ("add", "sub", "mul", "div", "max", "min")
FUNCTIONS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
             "max": np.maximum, "min": np.minimum}


def broadcast_shapes(*shapes) -> tuple:
    """NumPy's broadcast of shapes, in Python integers: ``np.broadcast_shapes`` refuses shapes
    whose element count passes int64 ("broadcast dimensions too large"), which made valid
    broadcasts of huge declared shapes read as "do not broadcast". Raises ValueError."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(int(d) for d in s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def reduce_to(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach its shape."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, d in enumerate(shape) if d == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


class ConstantOp(Layer):
    """``x <op> c`` (or ``c <op> x`` with ``reverse``) for a constant array ``c``.

    ``c`` broadcasts against the whole batch (N, ...) by NumPy's rules, aligned on the
    right as in ONNX: a (C,) constant on (N, C, H, W) input runs along W, a (C, 1, 1)
    one per channel. ``c`` may not vary along the batch axis. It is a buffer
    (``constant``): saved in checkpoints, never trained.

    Args:
        op: ``"add"``, ``"sub"``, ``"mul"``, ``"div"``, ``"max"`` or ``"min"`` (where x
            equals c, max and min pass half the gradient, as PyTorch's ``maximum`` does).
        shape: The constant's shape (the values are set through ``buffers["constant"]``
            or ``value``).
        reverse: Compute ``c - x`` / ``c / x`` instead of ``x - c`` / ``x / c``.
        value: Initial values (default zeros for add/sub, ones for mul/div).

    Example:
        >>> layer = ConstantOp("mul", (2, 1, 1), value=np.array([[[2.0]], [[-1.0]]]))
        >>> layer.forward(np.ones((1, 2, 1, 2)))[0, :, 0]
        array([[ 2.,  2.],
               [-1., -1.]])
    """

    def __init__(self, op: str, shape=(), reverse: bool = False, value=None) -> None:
        super().__init__()
        if op not in OPS:
            raise ConfigError(f"ConstantOp: op must be one of {OPS}, got {op!r}")
        self.op, self.reverse = op, bool(reverse)
        self.shape = tuple(int(d) for d in shape)
        if value is None:
            value = np.full(self.shape, 1.0 if op in ("mul", "div") else 0.0)
        value = np.asarray(value, dtype=np.float32 if np.asarray(value).dtype != np.float64
                           else np.float64)
        if value.shape != self.shape:
            raise ConfigError(f"ConstantOp: value of shape {value.shape} given for shape {self.shape}")
        self.buffers["constant"] = value.copy()

    def output_shape(self, input_shape):
        full = (1,) + tuple(input_shape)
        try:
            out = broadcast_shapes(full, self.shape)
        except ValueError:
            raise ShapeError(f"{self.where()}: constant of shape {self.shape} does not broadcast "
                             f"against input (N, {', '.join(map(str, input_shape))})") from None
        if len(self.shape) == len(full) and self.shape[0] != 1:
            raise ShapeError(f"{self.where()}: constant of shape {self.shape} varies along the "
                             f"batch axis of input (N, {', '.join(map(str, input_shape))})")
        return tuple(out[1:])

    def _check_input(self, x):
        self.output_shape(x.shape[1:])

    def _forward(self, x, training, keep_cache):
        c = self.buffers["constant"].astype(x.dtype, copy=False)
        a, b = (c, x) if self.reverse else (x, c)
        out = FUNCTIONS[self.op](a, b)
        self._cache = (x, c) if keep_cache else None
        return out.astype(x.dtype, copy=False)

    def _backward(self, dout):
        x, c = self._cache
        if self.op == "add" or (self.op == "sub" and not self.reverse):
            dx = dout
        elif self.op == "sub":
            dx = -dout
        elif self.op == "mul":
            dx = dout * c
        elif self.op in ("max", "min"):
            wins = (x > c) if self.op == "max" else (x < c)
            dx = dout * np.where(x == c, 0.5, wins.astype(dout.dtype))
        elif not self.reverse:
            dx = dout / c
        else:
            dx = -dout * c / (x * x)   # d(c / x)/dx = -c / x^2
        return reduce_to(dx, x.shape).astype(dout.dtype, copy=False)

    def extra_repr(self):
        return f"{self.op!r}, shape={self.shape}" + (", reverse=True" if self.reverse else "")
