"""The inference plan: a network's inference forward decided once per input shape and dtype,
then replayed by a tight loop (issue 21, "plan once, run many"; onnxruntime's session,
oneDNN's primitives).

Invisible to users: ``net.forward(x)`` (``training=False``, no cache) on a container looks up
the plan of ``(x.shape, x.dtype)``. The first call with a shape runs the ordinary path,
which checks the input layer by layer and raises the usual errors; when it succeeds, the
plan is made from the network's structure and every later call with that shape runs it:

* **Planning**: the network is lowered once into a flat list of steps. The fusions are
  decided there: a convolution, the batch norm after it (its scale and shift applied
  where the bias is added), the ReLU after that, and in a residual block the shortcut's
  sum and the block's ReLU too (``Conv2d.fused_inference``: bias + batch norm + add +
  ReLU in one pass over the output). Sequential, Residual, Concat and Graph (an imported
  ONNX model: the same fusions, found by its wiring) are lowered into their layers; each
  step calls its layer's kernels directly: no per-layer input checks, dtype casts, hook
  tests or fusion pairing per call.
* **Memory**: each intermediate is released as soon as the last step that reads it has
  run (liveness computed at plan time). The buffers themselves come from NumPy's
  allocator, which already recycles freed blocks without page faults (measured: 0 minor
  faults per ResNet-18 or GoogLeNet forward, benchmarks/README.md), so a reusing arena
  would save nothing and would need an output operand in every kernel. The array handed
  back is never one the plan writes again: each call's output is freshly allocated.
* **Run loop**: ``regs[out] = step(*regs[ins])`` over the steps; nothing is re-decided.
  Kernel choice stays with each layer's conv plan (``conv_choice.plan``), itself cached.
  A Concat's branches are one step (:class:`_Branches`): at a batch smaller than the
  block threads each thread runs whole branches, one hand-off per Concat instead of one
  per layer (GoogLeNet b1 17.1 -> 15.3 ms, Inception v3 52.1 -> 47.1; benchmarks/README.md,
  section 60); what they share is released once all of them ran.

What turns it off (the ordinary path runs, seeing and calling every layer as before):
a hook anywhere (global, or on any layer of the network: hooks see every layer),
``training=True`` or ``cache=True``, kernels pinned to NumPy (``VOLNET_KERNELS=numpy``:
nothing fuses there), parameters of another dtype than the input, ``VOLNET_PLAN=0`` or
``inference_plan.ENABLED = False``. A structural change (a child replaced or appended, a
container sliced, ``astype``) bumps the ``structure`` count of the layers it touches, and
a plan that runs any of them is rebuilt on its next call. Parameters and running statistics are read
live on every call, so an optimizer step, ``load_state_dict`` or an in-place edit is seen
by the next call; the Winograd filter transforms and the direct kernel's packed filters
are cached by content (``functional.weight_cache``), never stale either. A hyperparameter assigned after
construction (``conv.stride = ...``) is not a structural change: build a new layer.
"""

from __future__ import annotations

import operator
import os
import weakref

import numpy as np

from volnet.functional.activation import add_relu
from volnet.layers import hooks
from volnet.layers.activation import ReLU
from volnet.layers.base import Layer, inner_calls, structure_changes
from volnet.layers.containers import Concat, Residual, Sequential
from volnet.layers.conv import Conv2d
from volnet.layers.graph import Graph
from volnet.layers.norm import BatchNorm2d
from volnet.runtime import allocator, backend, block_threads

ENABLED = os.environ.get("VOLNET_PLAN", "1").strip() != "0"   # on unless "0"
MAX_PLANS = 8       # per network: shapes beyond this evict the oldest plan
PARALLEL_BRANCHES = True    # a Concat's branches side by side at batch 1 (_Branches) ...
BRANCH_BALANCE = 0.9        # ... where no thread's share holds more than this part of their
#   convolutions' weights: a lone convolution beside an identity or a pool (an Inception-v4
#   stem, a DenseNet block) runs in turn, each layer splitting its own work (side by side /
#   in turn, ms: v4 stem's maxpool + 64->96 3x3 s2 on 147x147 4.72 / 3.89, identity + 3x3
#   on 56x56 1.78 / 1.45). GoogLeNet's heaviest branch holds 62-83% (benchmarks/README.md, 60)

_STRUCTURE = operator.attrgetter("structure")
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # root -> {key: Plan}
_stats = {"made": 0, "reused": 0}


def stats() -> dict:
    """{"made", "reused"}: plans made, and calls that ran a plan (benchmark records)."""
    return dict(_stats)


def run(root: Layer, x: np.ndarray) -> np.ndarray | None:
    """``root``'s inference output for ``x`` by its plan, or None when no plan applies
    (then the caller runs the ordinary forward and this call's shape may get a plan made).

    Called by ``Layer.forward`` for a container at the outermost call with
    ``training=False`` and no cache, after the input checks of the root itself.
    """
    if not ENABLED or hooks.active(root) or not backend.fusing():
        return None
    plans = _plans.get(root)
    plan = plans.get((x.shape, x.dtype)) if plans else None
    if plan is None or not plan.usable(root):
        return None
    _stats["reused"] += 1
    return plan.run(x)


def note_unplanned(root: Layer, x: np.ndarray) -> None:
    """After an ordinary inference forward of ``root`` on ``x`` succeeded (so the input
    passed every layer's checks): make the plan of this shape for the next call."""
    if not ENABLED or hooks.active(root) or not backend.fusing():
        return
    key = (x.shape, x.dtype)
    plans = _plans.setdefault(root, {})
    old = plans.get(key)
    if old is not None and not old.stale(root):
        return      # a valid plan exists: this call went unplanned because of a hook
    plan = Plan.make(root, x.dtype)
    # the heap keeps what one run frees for the next (volnet.runtime.allocator), as training
    # does: ResNet-50 b1 took 1,536 page faults per forward without it, none with it
    allocator.keep_freed_memory()
    plans.pop(key, None)
    plans[key] = plan
    while len(plans) > MAX_PLANS:
        plans.pop(next(iter(plans)))
    _stats["made"] += isinstance(plan, Plan)


def plans_of(root: Layer) -> dict:
    """``root``'s plans by (input shape, dtype): what the benchmarks and tests inspect (a
    copy never shares them: they live outside the layer, keyed weakly by it)."""
    return dict(_plans.get(root, {}))


# ---- steps: callables over the registers ------------------------------------------------

class _Conv:
    """A convolution with its folded batch norm, ReLU and residual sum (one kernel pass)."""

    __slots__ = ("bn", "conv", "relu")

    def __init__(self, conv, bn, relu):
        self.conv, self.bn, self.relu = conv, bn, relu

    def __call__(self, x, residual=None):
        return self.conv.fused_inference(x, self.bn, self.relu, residual)


class _Multi:
    """A layer of several inputs (``arity`` > 1) in a Graph: its ordinary forward."""

    __slots__ = ("layer",)

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, *xs):
        return self.layer.forward(xs, False)


class _Whole:
    """A layer the plan does not look into (a SideBranch, a subclass with its own forward):
    its ordinary forward."""

    __slots__ = ("layer",)

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer.forward(x, False)


class _Branches:
    """A Concat's branches run side by side: at a batch smaller than the block threads,
    each thread runs whole branches (its share: about equal filter weights), one after the
    other, every layer in them on that thread alone; else the branches in turn on the
    caller, each layer splitting its own work as it does outside a group.

    One hand-off per Concat instead of one per split layer, and each thread's branches in
    its own cache (benchmarks/README.md, section 60: GoogLeNet's inception modules at batch
    1 hold 5-30M multiply-adds a layer, too few to split well). Every layer computes the
    same bits on one thread as split (the kernels' tests), so the output does not depend
    on which thread ran it.

    Attributes:
        branches: per branch, its steps (fn, input registers, output register, registers
            freed after it: only its own intermediates; what the branches share, their
            input, is freed after the group).
        costs: per branch, the weights of its convolutions (what its products cost, up to
            the maps' size, which a Concat's branches share).
        slot: the register of the branches' input.
    """

    __slots__ = ("_largest", "_shares", "branches", "costs", "slot", "total")

    def __init__(self, branches, costs, slot):
        self.branches, self.costs, self.slot = branches, costs, slot
        self.total = sum(costs)
        self._shares, self._largest = {}, {}

    def shares(self, count: int) -> list:
        """The branches (indices) of each of ``count`` threads: largest first, each to the
        least loaded thread (kept per count)."""
        shares = self._shares.get(count)
        if shares is None:
            loads, shares = [0] * count, [[] for _ in range(count)]
            for i in sorted(range(len(self.costs)), key=lambda i: -self.costs[i]):
                t = loads.index(min(loads))
                shares[t].append(i)
                loads[t] += self.costs[i]
            shares = self._shares[count] = [sorted(s) for s in shares if s]
            self._largest[count] = max(loads)
        return shares

    def __call__(self, regs):
        count = min(block_threads.workers(), len(self.branches))
        shares = self.shares(count) if count > 1 else None
        if (shares is None or regs[self.slot].shape[0] >= count or not PARALLEL_BRANCHES
                or self._largest[count] > BRANCH_BALANCE * self.total):
            for steps in self.branches:
                _run_steps(steps, regs)
            return

        def share(i):
            with inner_calls():     # the network's call is outermost, on the caller's thread
                for b in shares[i]:
                    _run_steps(self.branches[b], regs)

        block_threads.run(share, len(shares))


def _run_steps(steps, regs):
    """``regs[out] = fn(*regs[ins])`` for each step in turn, then its registers released; a
    group of branches (output register None) fills its own registers."""
    for fn, ins, out, frees in steps:
        if out is None:
            fn(regs)
        elif len(ins) == 1:
            regs[out] = fn(regs[ins[0]])
        else:
            regs[out] = fn(*[regs[r] for r in ins])
        for r in frees:
            regs[r] = None


def _conv_weights(layer: Layer) -> int:
    """The filter weights of the convolutions in ``layer`` (itself included)."""
    return sum(sub.params["weight"].size for _, sub in layer.named_layers()
               if isinstance(sub, Conv2d))


def _add(a, b):
    return a + b


def _add_relu(a, b):
    return add_relu(a, b, keep_cache=False)[0]


def _concat(*parts):
    return np.concatenate(parts, axis=1)


def _sum(*parts):
    return sum(parts[1:], parts[0])


def _lowered(layer: Layer) -> bool:
    """Whether the plan lowers ``layer`` into its parts (else it runs whole)."""
    kind = type(layer)
    return ((isinstance(layer, Sequential) and kind._forward is Sequential._forward)
            or (isinstance(layer, Residual) and kind._forward is Residual._forward)
            or (isinstance(layer, Concat) and kind._forward is Concat._forward)
            or (isinstance(layer, Graph) and kind._forward is Graph._forward))


class StructureSnapshot:
    """What a plan (or a refusal to plan) was made from: every layer below the root and
    each one's ``structure`` count. Nothing here refers to the root, which keys the plans
    weakly: a network that is dropped takes its plans with it."""

    def __init__(self, root: Layer) -> None:
        self.layers = [layer for _, layer in root.named_layers()][1:]
        self.versions = [layer.structure for layer in self.layers]
        self.root_version = root.structure

    def stale(self, root: Layer) -> bool:
        """Whether a layer of the network changed structure since this was made."""
        return root.structure != self.root_version or any(
            layer.structure != v for layer, v in zip(self.layers, self.versions))


class _Refused(StructureSnapshot):
    """A shape and dtype the network is run unplanned for, until its structure changes
    (its parameters have another dtype than the input: the ordinary path casts layer by
    layer), remembered so that no call tries again."""

    def usable(self, root: Layer) -> bool:
        return False


class Plan(StructureSnapshot):
    """The steps of one network's inference for one input shape and dtype.

    Attributes:
        steps: (callable, input registers, output register, registers freed after it).
        residual_fusion: residual sums in the last conv's epilogue (False: a step of their
            own, what ``benchmarks/plan_ab.py`` compares against).
        layers: every layer below the root (on each call their structure counts are
            compared again once any layer's changed, and their hooks asked for while any
            layer has one).
        versions: each layer's ``structure`` count when the plan was made (the root's
            is ``root_version``).
    """

    def __init__(self, root: Layer, residual_fusion: bool = True) -> None:
        super().__init__(root)
        self.residual_fusion = residual_fusion
        self._verified = None           # structure_changes() when the layers last matched
        self._raw: list[tuple] = []     # (callable, input registers, output register)
        self._groups: list[tuple] = []  # a Concat's (input register, its branches' step
        #                                 ranges in _raw, their costs), inner ones first
        self.count = 1                  # register 0 holds the input
        self.out = self._lower(root, 0)
        self.steps = self._with_liveness()
        # what run() leaves as the ordinary forward does (no layer holding a cache), split
        # at plan time: layers with Layer's own clear_cache are cleared only where a cache
        # is set (an attribute test; 281 method calls cost GoogLeNet ~50 us a forward)
        self._plain = [layer for layer in self.layers
                       if type(layer).clear_cache is Layer.clear_cache]
        self._custom = [layer for layer in self.layers
                        if type(layer).clear_cache is not Layer.clear_cache]

    @classmethod
    def make(cls, root: Layer, dtype) -> Plan | _Refused:
        """The plan of ``root`` for inputs of ``dtype``, or a refusal where the plan would
        not be the ordinary path's computation (parameters of another dtype: those layers
        cast) or would be one ordinary step (a root the plan does not look into)."""
        if any(p.dtype != dtype for _, p, _ in root.named_params()) or not _lowered(root):
            return _Refused(root)
        return cls(root)

    def usable(self, root: Layer) -> bool:
        """Not stale, and no hook watches a layer (hooks see every layer: the plan then
        stands aside; ``run`` looked at the root's)."""
        # the layers' structure counts are read only after some layer, anywhere, changed
        # structure since they last matched, and their hooks only while some layer has one:
        # reading both from all 281 of GoogLeNet's layers cost ~35-85 us a call
        changes = structure_changes()       # read first: a change during the check shows
        if changes != self._verified:
            if (root.structure != self.root_version
                    or list(map(_STRUCTURE, self.layers)) != self.versions):
                return False
            self._verified = changes
        return not (hooks.any_layer_hooks() and any(map(hooks.active, self.layers)))

    # ---- lowering ------------------------------------------------------------------
    def _step(self, fn, ins: tuple[int, ...]) -> int:
        out = self.count
        self.count += 1
        self._raw.append((fn, ins, out))
        return out

    def _lower(self, layer: Layer, slot: int) -> int:
        if not _lowered(layer):
            if layer.named_children() or type(layer).forward is not Layer.forward:
                return self._step(_Whole(layer), (slot,))
            return self._step(layer.forward_planned, (slot,))
        if isinstance(layer, Sequential):
            for step in layer.fused_steps(fold=True):
                slot = self._lower_step(step, slot)
            return slot
        if isinstance(layer, Residual):
            return self._lower_residual(layer, slot)
        if isinstance(layer, Graph):
            return self._lower_graph(layer, slot)
        parts, spans = [], []                                           # Concat
        for branch in layer:
            start = len(self._raw)
            parts.append(self._lower(branch, slot))
            spans.append((start, len(self._raw)))
        # side by side only where two branches have steps, and no layer serves two of them
        # (a fused ReLU sets its layer's state for the length of a call)
        layers = [id(sub) for branch in layer for _, sub in branch.named_layers()]
        if sum(b > a for a, b in spans) > 1 and len(layers) == len(set(layers)):
            self._groups.append((slot, spans, [_conv_weights(b) + 1 for b in layer]))
        return self._step(_concat, tuple(parts))

    def _lower_step(self, step, slot: int) -> int:
        """One ``Sequential.fused_steps`` entry: (conv, bn, relu) folded, (layer, None, relu)
        rectifying its own output, or (layer, None, None)."""
        layer, bn, relu = step
        if type(layer) is Conv2d and (bn is not None or relu is not None):
            return self._step(_Conv(layer, bn, relu is not None), (slot,))
        if relu is not None and not layer.named_children() and type(layer).forward is Layer.forward:
            return self._step(layer.inference_relu, (slot,))
        if relu is not None:        # a container that fuses its ReLU: its own forward_relu
            return self._step(lambda x, layer=layer: layer.forward_relu(x, False), (slot,))
        return self._lower(layer, slot)

    def _lower_residual(self, block: Residual, slot: int) -> int:
        """The shortcut first, then the body, whose last convolution takes the shortcut's
        output as its residual operand and applies the block's ReLU (when the body ends in
        a convolution, optionally with its batch norm); else the body, then the sum."""
        act = block.activation
        if act is not None and type(act) is not ReLU:
            return self._step(_Whole(block), (slot,))
        short = self._lower(block.shortcut, slot) if block.shortcut is not None else slot
        body = block.body
        steps = (body.fused_steps(fold=True) if isinstance(body, Sequential) and _lowered(body)
                 else None)
        if self.residual_fusion and steps and type(steps[-1][0]) is Conv2d and steps[-1][2] is None:
            cur = slot
            for step in steps[:-1]:
                cur = self._lower_step(step, cur)
            conv, bn, _ = steps[-1]
            return self._step(_Conv(conv, bn, act is not None), (cur, short))
        out = self._lower(body, slot)
        return self._step(_add_relu if act is not None else _add, (out, short))

    def _lower_graph(self, graph: Graph, slot: int) -> int:
        """A Graph's nodes, with the fusions of Sequential and Residual found by their
        wiring (an imported ONNX ResNet has no containers): a Conv2d whose output only a
        BatchNorm2d reads, and/or a ReLU; a batch norm and the ReLU that alone reads it; an
        ``add`` of two tensors, one from such a convolution read by nothing else, and the
        ReLU that alone reads the sum (the residual in the conv's epilogue). A fused group
        runs where its last node stood: every tensor it reads is made by then."""
        nodes = graph.nodes
        readers: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            for name in node.inputs:
                readers.setdefault(name, []).append(i)
        readers.setdefault(graph.output_name, []).append(len(nodes))     # by the caller

        def layer_of(i):
            node = nodes[i]
            return graph[node.name] if node.kind == "layer" else None

        def only_reader(i, kind=None):
            """The one node reading node i's output, of ``kind`` (a layer type) or an add."""
            after = readers.get(nodes[i].output, [])
            if len(after) != 1 or after[0] >= len(nodes):
                return None
            j = after[0]
            if kind is None:
                return j if nodes[j].kind == "add" and len(nodes[j].inputs) == 2 else None
            return j if type(layer_of(j)) is kind else None

        groups = {}     # last node -> (first node, conv, bn, relu, residual tensor)
        taken = set()   # nodes run inside a fused step
        for i in range(len(nodes)):
            conv = layer_of(i)
            if type(conv) is not Conv2d or i in taken:
                continue
            members, bn, relu, residual = [i], None, False, None
            j = only_reader(i, BatchNorm2d)
            if j is not None:
                members.append(j)
                bn = layer_of(j)
            j = only_reader(members[-1], ReLU)
            if j is not None:
                members.append(j)
                relu = True
            elif self.residual_fusion:
                add = only_reader(members[-1])
                after = (only_reader(add, ReLU) if add is not None and add not in taken
                         else None)
                ins = nodes[add].inputs if after is not None else ()
                if after is not None and ins[0] != ins[1]:
                    residual = ins[1] if ins[0] == nodes[members[-1]].output else ins[0]
                    members += [add, after]
                    relu = True
            if len(members) > 1:
                groups[members[-1]] = (i, conv, bn, relu, residual)
                taken.update(members)
        regs = {graph.input_name: slot}
        for i, node in enumerate(nodes):
            if i in groups:
                first, conv, bn, relu, residual = groups[i]
                ins = (regs[nodes[first].inputs[0]],)
                if residual is not None:
                    ins += (regs[residual],)
                regs[node.output] = self._step(_Conv(conv, bn, relu), ins)
                continue
            if i in taken:
                continue
            ins = tuple(regs[name] for name in node.inputs)
            if node.kind == "add":
                relu = only_reader(i, ReLU)
                if relu is not None and len(ins) == 2:
                    taken.add(relu)
                    regs[nodes[relu].output] = self._step(_add_relu, ins)
                else:
                    regs[node.output] = self._step(_sum, ins)
            elif node.kind == "concat":
                regs[node.output] = self._step(_concat, ins)
            elif len(ins) > 1:
                regs[node.output] = self._step(_Multi(layer_of(i)), ins)
            else:
                layer = layer_of(i)
                relu = only_reader(i, ReLU)
                if (relu is not None and getattr(layer, "fuses_relu", False)
                        and not layer.named_children()
                        and type(layer).forward is Layer.forward):
                    taken.add(relu)
                    regs[nodes[relu].output] = self._step(layer.inference_relu, ins)
                else:
                    regs[node.output] = self._lower(layer, ins[0])
        return regs[graph.output_name]

    def _with_liveness(self) -> list[tuple]:
        """Each step with the registers whose last reader it is (released after it runs);
        the steps of each outermost Concat's branches gathered into one :class:`_Branches`
        step (its output register None), which releases what the branches share (their
        input) only once all of them ran: on two threads, one branch must not drop what
        another has still to read."""
        last, made = {}, {0: -1}
        for i, (_, ins, out) in enumerate(self._raw):
            last[out] = i               # an output nobody reads is released at once
            made[out] = i
            for r in ins:
                last[r] = i
        frees = [[] for _ in self._raw]
        for reg, i in last.items():
            if reg != self.out:
                frees[i].append(reg)
        steps = [(fn, ins, out, tuple(f)) for (fn, ins, out), f in zip(self._raw, frees)]
        outer = []                      # outermost groups: not inside another's range
        for group in sorted(self._groups, key=lambda g: (g[1][0][0], -g[1][-1][1])):
            if not outer or group[1][0][0] >= outer[-1][1][-1][1]:
                outer.append(group)
        for slot, spans, costs in reversed(outer):
            start, end = spans[0][0], spans[-1][1]
            shared = []
            branches = []
            for b0, b1 in spans:
                branch = []
                for fn, ins, out, own in steps[b0:b1]:
                    keep = tuple(r for r in own if b0 <= made[r] < b1)
                    shared += [r for r in own if not b0 <= made[r] < b1]
                    branch.append((fn, ins, out, keep))
                branches.append(branch)
            steps[start:end] = [(_Branches(branches, costs, slot), (slot,), None,
                                 tuple(shared))]
        return steps

    # ---- running -----------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """The network's inference output for ``x`` (of the planned shape and dtype)."""
        regs = [None] * self.count
        regs[0] = x
        try:
            _run_steps(self.steps, regs)
        finally:
            for layer in self._plain:   # as the ordinary inference forward leaves them
                if layer._cache is not None:
                    layer._cache = None
            for layer in self._custom:
                layer.clear_cache()
        return regs[self.out]

