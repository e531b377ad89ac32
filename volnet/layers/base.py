"""The layer contract every volnet layer and container follows.

A layer maps an input volume to an output volume with a differentiable
function (CS231n; Torch7's ``nn.Module`` protocol):

* ``forward(x, training=False)`` returns ``y`` and, when training (or when
  asked with ``cache=True``), keeps what ``backward`` needs;
* ``backward(dout)`` returns ``dx`` for the *last* forward and overwrites
  ``grads`` (``accumulate=True`` adds instead; an optimizer's ``step()`` refuses
  gradients overwritten by several backward calls since its last step); it frees
  the forward's cache once used, so each forward serves one backward;
  ``backward(dout, input_grad=False)`` fills the same ``grads``, returns None
  and skips the input gradient where it can (training steps use it);
* ``output_shape(input_shape)`` gives the per-example output shape from shapes
  alone, so summaries and FC->CONV conversion never need data;
* ``params`` / ``grads`` are dicts keyed by PyTorch's names (``weight``,
  ``bias``), ``buffers`` hold non-trained state (``running_mean``...);
* ``state_dict()`` / ``load_state_dict()`` use PyTorch's dotted keys.

Subclasses implement ``_forward(x, training, keep_cache)``, ``_backward(dout)``,
``output_shape`` and optionally ``_check_input``, ``named_children`` and
``_backward_params(dout)`` (grads only, no dx).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
import threading
from collections import OrderedDict
from collections.abc import Iterator
from types import MappingProxyType

import numpy as np

from volnet.errors import (
    ConfigError,
    DTypeError,
    NonFiniteError,
    ShapeError,
    StateDictError,
    StateError,
)
from volnet.layers import hooks
from volnet.runtime import allocator, block_threads

_local = threading.local()   # forward and backward nesting depths (only the outermost forward
                             # scans for NaN; the outermost call of either sets the thread
                             # policy); whether the running backward accumulates
_released = {"once": False}  # whether a backward released a cache yet (allocator settings)
_structure_changes = {"count": 0}   # every layer's structural changes, counted together


@contextlib.contextmanager
def inner_calls():
    """Layer calls on this thread count as nested inside it, not outermost: no scan of the
    input for NaN, no plan of their own, no thread section. For the part of one network's
    call that runs on another thread (an inference plan's Concat branches on a block
    thread), whose outermost call is the network's, on the caller's thread."""
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth = depth


def _keys(kind: str, keys: list[str], limit: int = 5) -> list[str]:
    """One problem per key, or one line with a count and the first few: a file of another
    architecture gives hundreds."""
    if len(keys) <= limit:
        return [f"{kind} key {k}" for k in keys]
    return [f"{len(keys)} {kind} keys ({', '.join(keys[:limit])}, ...)"]


def join_key(prefix: str, name: str) -> str:
    """Dotted key of ``name`` under ``prefix``; an empty name is spliced into its parent."""
    if not name:
        return prefix
    return f"{prefix}.{name}" if prefix else name


def structure_changes() -> int:
    """How many structural changes any layer had (an inference plan that checked its
    layers at this count need not look at them again until it moves)."""
    return _structure_changes["count"]


class LayerName:
    """A layer's :meth:`Layer.where`, computed when formatted into a message."""

    __slots__ = ("layer",)

    def __init__(self, layer: Layer) -> None:
        self.layer = layer

    def __str__(self) -> str:
        return self.layer.where()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class Layer:
    """Maps an input volume to an output volume; owns its backward pass."""

    # per-layer hooks (volnet.layers.hooks): read-only and empty until one is registered
    _forward_hooks = MappingProxyType({})
    _backward_hooks = MappingProxyType({})
    # backward calls since an optimizer last used (or zeroed) these gradients, and how many
    # of them overwrote gradients no step had used: PyTorch-style accumulation, which an
    # optimizer's step() refuses (volnet.train.optim)
    grad_backwards = 0
    grad_overwrites = 0
    # containers run their inference forward by a plan made once per input shape
    # (volnet.layers.inference_plan); leaves have nothing to plan
    plans_inference = False
    _structure = 0

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.frozen: set[str] = set()       # parameter names excluded from training
        self.path = ""                      # dotted location in the enclosing network
        self._cache = None
        self._out_shape: tuple[int, ...] | None = None

    @property
    def structure(self) -> int:
        """Bumped by every structural change to this layer (a container built or sliced, a
        child replaced or appended, astype): inference plans that ran it are rebuilt."""
        return self._structure

    @structure.setter
    def structure(self, value: int) -> None:
        self._structure = value
        _structure_changes["count"] += 1

    # ---- the subclass API -------------------------------------------------
    def _forward(self, x: np.ndarray, training: bool, keep_cache: bool) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _forward")

    def _backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _backward")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-example output shape (batch axis excluded) for a per-example input shape."""
        raise NotImplementedError(f"{type(self).__name__} must implement output_shape")

    def _check_input(self, x: np.ndarray) -> None:
        """Raise a ShapeError naming the layer when ``x`` cannot be this layer's input."""

    def named_children(self) -> list[tuple[str, Layer]]:
        """Direct sub-layers with their names; empty for a leaf layer."""
        return []

    # ---- running ----------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, *, cache: bool | None = None) -> np.ndarray:
        """Run the layer on a batch ``x`` of shape (N, *input_shape).

        Args:
            x: a floating-point array; a layer with parameters computes in its
                parameters' dtype (see ``astype``), others keep the input's dtype.
            training: batch statistics for batch norm, dropout active.
            cache: keep what ``backward`` needs; defaults to ``training``, so
                inference keeps nothing. Pass ``cache=True`` for gradients in
                inference mode (saliency maps, gradient checks of eval mode).
        """
        keep = training if cache is None else bool(cache)
        depth = getattr(_local, "depth", 0)
        x = self._validate(x, outermost=depth == 0)
        planned = self.plans_inference and depth == 0 and not keep and not training
        _local.depth = depth + 1
        try:
            # the outermost call: OpenBLAS on one thread while volnet's threads work
            with block_threads.section() if depth == 0 else contextlib.nullcontext():
                out = None
                if planned:
                    from volnet.layers import inference_plan
                    out = inference_plan.run(self, x)
                if out is None:
                    out = self._forward(x, training, keep)
                    if planned:     # x passed every layer's checks: plan this shape
                        inference_plan.note_unplanned(self, x)
        finally:
            _local.depth = depth
        self._out_shape = out.shape
        if not keep:
            self._cache = None
        if hooks.active(self):
            hooks.after_forward(self, x, out, training)
        return out

    __call__ = forward

    def forward_planned(self, x: np.ndarray) -> np.ndarray:
        """This layer's inference computation alone, ``_forward(x, False, False)``: no input
        checks, casts, cache or hooks. For an inference plan (volnet.layers.inference_plan),
        which checked this input's shape and dtype on its first, ordinary call."""
        return self._forward(x, False, False)

    def clear_cache(self) -> None:
        """Forget what the last forward kept for backward (``backward`` then refuses)."""
        self._cache = None

    def register_forward_hook(self, fn) -> hooks.HookHandle:
        """Run ``fn(layer, x, out, training)`` after each forward of this layer.

        Returns a handle whose ``remove()`` unregisters it (see :mod:`volnet.layers.hooks`).
        """
        if "_forward_hooks" not in self.__dict__:
            self._forward_hooks = {}
        return hooks.add_layer_hook(self._forward_hooks, fn)

    def register_backward_hook(self, fn) -> hooks.HookHandle:
        """Run ``fn(layer, dout, dx)`` after each backward of this layer, once its ``grads``
        are written (``dx`` is None with ``input_grad=False``): "gradients ready"."""
        if "_backward_hooks" not in self.__dict__:
            self._backward_hooks = {}
        return hooks.add_layer_hook(self._backward_hooks, fn)

    def _backward_params(self, dout: np.ndarray) -> None:
        """Fill ``self.grads`` without returning dL/d(input); see ``backward(input_grad=False)``.

        The default runs ``_backward`` and drops its result (a layer without
        parameters or children skips even that). Layers whose input gradient costs
        real work (Conv2d, Linear) and containers override it.
        """
        if self.params or self.named_children():
            self._backward(dout)

    def backward(self, dout: np.ndarray, input_grad: bool = True, *,
                 accumulate: bool = False, retain_cache: bool = False) -> np.ndarray | None:
        """dL/d(output) -> dL/d(input) for the last forward; fills ``self.grads``.

        ``input_grad=False`` fills the same ``grads`` but returns None and skips
        the work of the input gradient where a layer can (a network's first
        convolution: nobody needs the gradient of the images, and PyTorch does not
        compute it either). Containers pass it on to the children that see their
        input, so ``net.backward(dout, input_grad=False)`` is what a training step
        wants.

        By default the parameter gradients are *overwritten*. ``accumulate=True``
        adds this backward's gradients to the ones already in ``grads`` (in every
        layer below this one), PyTorch's behaviour, for gradient accumulation over
        micro-batches; a layer with no gradient yet starts from zero.

        Each layer frees what its forward kept as soon as its gradients are computed (as
        PyTorch frees saved tensors), so a second backward needs a new forward.
        ``retain_cache=True`` keeps every cache below this layer for another backward
        (PyTorch's ``retain_graph=True``): gradient checks, or two losses on one forward.
        """
        if self._cache is None:
            raise StateError(
                f"{self.where()}: backward() needs a preceding forward(x, training=True) "
                "(or forward(x, cache=True)); forward(x, training=False) keeps no cache, "
                "and each forward's cache serves one backward: run forward again, or pass "
                "retain_cache=True to the backward before this one to keep it."
            )
        dout = self._as_float(dout, "dout")
        if dout.shape != self._out_shape:
            raise ShapeError(
                f"{self.where()}: backward expects dout of the last output's shape "
                f"{self._out_shape}, got {dout.shape}"
            )
        outer = getattr(_local, "accumulate", False)
        outer_retain = getattr(_local, "retain_cache", False)
        previous = ({k: v.copy() for k, v in self.grads.items()}
                    if (accumulate or outer) and self.params and not self.named_children() else None)
        _local.accumulate = outer or accumulate
        _local.retain_cache = outer_retain or retain_cache
        depth = getattr(_local, "backward_depth", 0)
        _local.backward_depth = depth + 1
        try:
            with block_threads.section() if depth == 0 else contextlib.nullcontext():
                if input_grad:
                    dx = self._backward(dout)
                else:
                    self._backward_params(dout)
                    dx = None
        finally:
            _local.accumulate = outer
            _local.retain_cache = outer_retain
            _local.backward_depth = depth
        if previous:
            for name, old in previous.items():
                new = self.grads.get(name)
                if new is not None and new.shape == old.shape:
                    self.grads[name] = new + old
        if self.params and not self.named_children():
            self.grad_overwrites += bool(self.grad_backwards and not (accumulate or outer))
            self.grad_backwards += 1
        if not (retain_cache or outer_retain):
            self._release_cache()
        if hooks.active(self):
            hooks.after_backward(self, dout, dx)
        return dx

    # a layer whose forward can overwrite its last cache's arrays (a ReLU mask, max-pool
    # winners) keeps them here once backward has used the cache: no page faults next step
    _reuses_cache = False
    _spare = None

    def _release_cache(self) -> None:
        """Drop the cache once backward has used it, as PyTorch frees saved tensors: each
        layer's saved inputs go as soon as its gradient is computed, so a training step's
        peak is the forward's activations, not those plus every gradient (ResNet-18, 16x224:
        560 -> 390 MB, benchmarks/README.md, seventh round). A second backward then needs
        a new forward."""
        if self._reuses_cache:
            self._spare = self._cache
        self._cache = None
        if not _released["once"]:   # the heap keeps what was freed for the next step's
            _released["once"] = True                       # forward (volnet.runtime.allocator)
            allocator.keep_freed_memory()

    def _reusable_cache(self):
        """The last cache, or the one backward released: arrays the next forward may
        overwrite (only for ``_reuses_cache`` layers)."""
        return self._cache if self._cache is not None else self._spare

    def mark_grads_used(self) -> None:
        """An optimizer used (or zeroed) this layer's gradients: the next backward starts anew."""
        self.grad_backwards = self.grad_overwrites = 0

    def _validate(self, x, outermost: bool) -> np.ndarray:
        x = self._as_float(x, "input")
        if outermost and not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise NonFiniteError(
                f"{self.where()}: input contains NaN or infinity (first at index "
                f"{tuple(int(i) for i in bad)}); clean or normalise the data first."
            )
        self._check_input(x)
        return x

    def _as_float(self, x, what: str) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise DTypeError(f"{self.where()}: {what} must be a NumPy array, got {type(x).__name__}")
        if x.dtype.kind != "f":                  # np.issubdtype: 3 us, twice per layer call
            raise DTypeError(
                f"{self.where()}: {what} must be floating point, got dtype {x.dtype} "
                f"with shape {x.shape}; convert with x.astype(np.float32) "
                "(divide uint8 images by 255)."
            )
        dtype = self.dtype
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        return x

    @property
    def dtype(self):
        """The dtype of the parameters (None for a layer without parameters)."""
        for value in self.params.values():
            return value.dtype
        return None

    # ---- naming and errors -------------------------------------------------
    def where(self) -> str:
        """How error messages name this layer: its repr and its place in the network."""
        head = self.extra_repr()
        text = f"{type(self).__name__}({head})" if not self.named_children() else type(self).__name__
        return f"{text} at {self.path}" if self.path else text

    def where_lazily(self) -> LayerName:
        """:meth:`where` as an object formatted only if an error message uses it: shape
        checks that run on every forward pass it instead of the string (building it took
        14 us, twice per convolution call)."""
        return LayerName(self)

    def _expect_rank(self, x: np.ndarray, rank: int, layout: str) -> None:
        if x.ndim != rank:
            raise ShapeError(
                f"{self.where()} expects a {rank}-D input {layout}, got shape {x.shape}"
                + ("; add Flatten() before a Linear layer" if layout == "(N, in_features)" else "")
            )

    def _set_path(self, path: str) -> None:
        self.structure += 1     # every container edit renames its children through here
        self.path = path
        for name, child in self.named_children():
            child._set_path(join_key(path, name))

    def extra_repr(self) -> str:
        """Arguments shown inside the repr's parentheses."""
        return ""

    def __repr__(self) -> str:
        children = self.named_children()
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name or '_'}): {body}")
        return "\n".join(lines) + "\n)"

    # ---- parameters, buffers and state dicts --------------------------------
    def named_layers(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        """Yield (dotted path, layer) for this layer and every descendant, depth first."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_layers(join_key(prefix, name))

    def named_params(self, prefix: str = "", trainable_only: bool = False):
        """Yield (dotted name, param, grad or None) over the whole network."""
        for path, layer in self.named_layers(prefix):
            for name, value in layer.params.items():
                if trainable_only and name in layer.frozen:
                    continue
                yield join_key(path, name), value, layer.grads.get(name)

    def parameters(self) -> list:
        """Handles on every parameter, for ``vn.SGD(net.parameters(), lr=...)``.

        Each :class:`~volnet.layers.parameter.Parameter` has ``name`` (dotted),
        ``data`` (the array) and ``grad`` (the last backward's gradient), read
        when used; frozen parameters are listed and skipped by the optimizer.
        """
        from volnet.layers.parameter import Parameter

        return [Parameter(join_key(path, name), layer, name)
                for path, layer in self.named_layers() for name in layer.params]

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (buffers excluded)."""
        return sum(int(p.size) for _, p, _ in self.named_params(trainable_only=trainable_only))

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and buffer under PyTorch-style dotted keys."""
        state = OrderedDict()
        for path, layer in self.named_layers():
            for name, value in list(layer.params.items()) + list(layer.buffers.items()):
                state[join_key(path, name)] = value.copy()
        return state

    def _slots(self) -> dict[str, tuple[dict, str]]:
        return {join_key(path, name): (store, name)
                for path, layer in self.named_layers()
                for store in (layer.params, layer.buffers) for name in store}

    def load_state_dict(self, state, strict: bool = True) -> dict[str, list[str]]:
        """Copy arrays from ``state`` into this network's parameters and buffers.

        Shapes must match exactly. With ``strict`` (default) missing and
        unexpected keys are errors too; all problems are reported at once and
        nothing is changed unless everything fits. Values are cast to the
        existing arrays' dtypes. Returns the missing and unexpected keys.
        """
        slots = self._slots()
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        problems = []
        for key, (store, name) in slots.items():
            if key not in state:
                continue
            value = np.asarray(state[key])
            if value.shape != store[name].shape:
                problems.append(f"shape mismatch for {key}: checkpoint {tuple(value.shape)} "
                                f"vs model {tuple(store[name].shape)}")
            elif value.dtype.kind not in "fiub":
                problems.append(f"{key}: dtype {value.dtype} is not numeric")
            elif not np.isfinite(value).all():
                problems.append(f"{key}: contains NaN or infinity")
        if strict:
            problems += _keys("missing", missing) + _keys("unexpected", unexpected)
        if problems:
            matching = len(slots) - len(missing)
            other = (f" Only {matching} of the network's {len(slots)} keys are in the state "
                     "dict: these look like the weights of another architecture; check the "
                     "model name." if strict and matching * 2 < len(slots) else "")
            raise StateDictError(
                f"cannot load state dict into {type(self).__name__}: "
                + "; ".join(problems[:8] + ([f"{len(problems) - 8} more problems"]
                                            if len(problems) > 8 else [])) + "." + other
                + " Use strict=False to load a subset with matching names."
            )
        for key, (store, name) in slots.items():
            if key in state:
                store[name][...] = np.asarray(state[key]).astype(store[name].dtype, copy=False)
        return {"missing": missing, "unexpected": unexpected}

    # ---- conveniences ---------------------------------------------------------
    def astype(self, dtype) -> Layer:
        """Convert every floating parameter, gradient and buffer to ``dtype`` in place."""
        dtype = np.dtype(dtype)
        for _, layer in self.named_layers():
            for store in (layer.params, layer.grads, layer.buffers):
                for name, value in store.items():
                    if np.issubdtype(value.dtype, np.floating):
                        store[name] = value.astype(dtype)
            layer._cache = layer._spare = None
            layer.structure += 1
        return self

    def copy(self) -> Layer:
        """A deep copy sharing no arrays with this layer (caches and hooks dropped)."""
        dup = copy.deepcopy(self)
        for _, layer in dup.named_layers():
            layer._cache = layer._spare = None
            layer.__dict__.pop("_forward_hooks", None)
            layer.__dict__.pop("_backward_hooks", None)
        return dup

    def freeze(self, *patterns: str) -> Layer:
        """Exclude parameters whose dotted names match any glob pattern from training.

        ``net.freeze("*")`` freezes everything; ``net.freeze("features.*")`` a part.
        """
        self._set_frozen(patterns or ("*",), True)
        return self

    def unfreeze(self, *patterns: str) -> Layer:
        """Undo :meth:`freeze` for parameters matching the patterns (all by default)."""
        self._set_frozen(patterns or ("*",), False)
        return self

    def _set_frozen(self, patterns, frozen: bool) -> None:
        for path, layer in self.named_layers():
            for name in layer.params:
                if any(fnmatch.fnmatchcase(join_key(path, name), p) for p in patterns):
                    (layer.frozen.add if frozen else layer.frozen.discard)(name)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (softmax of the scores) for ``x``, in inference mode, batched."""
        from volnet.functional.loss import softmax

        if batch_size < 1:
            raise ConfigError(f"{self.where()}: predict() needs batch_size >= 1, got {batch_size}")
        outs = [softmax(self.forward(x[i:i + batch_size]).reshape(len(x[i:i + batch_size]), -1))
                for i in range(0, len(x), batch_size)]
        if not outs:
            return np.zeros((0,) + (math.prod(self.output_shape(x.shape[1:])),), dtype=x.dtype)
        return np.concatenate(outs)
