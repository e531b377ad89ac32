"""The onnx package's operator conformance cases (``onnx.backend.test.case.node``) run
through volnet's importer.

For each operator :func:`volnet.io.onnx.importer.supported_ops` lists, the cases of that
operator's module are collected (not ``collect_testcases()``, which exports all ~1,900
cases: 35 s here; importing only the listed operators' modules is what it does inside).
``_expanded`` / ``_expanded_verN`` variants (the operator rewritten as a function of others) are left out.
A case runs as a network: its first input is the graph input (axis 0 the batch axis),
the other inputs are bound as constants (initializers), as weights are in real files.
Where that is refused and the operator folds (Shape, Gather, Cast...), the case runs once
more with every input constant, through the folding pass alone.

``python tests/io/onnx_conformance.py`` prints the README's conformance table.
"""

from __future__ import annotations

import collections
import importlib
import os
import re
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from volnet.errors import VolnetError
from volnet.io.onnx.attributes import attrs
from volnet.io.onnx.fold import fold
from volnet.io.onnx.importer import load_onnx, supported_ops
from volnet.io.onnx.registry import FOLDERS

RTOL = 1e-4
MODULES = {"BatchNormalization": "batch_normalization", "Identity": "identity"}


def collect() -> dict[str, list]:
    """{operator: [onnx TestCase, ...]} for every operator the importer lists."""
    import onnx.backend.test.case.node as pkg

    found = collections.defaultdict(list)
    pkg._TargetOpType = None
    folder = os.path.dirname(pkg.__file__)
    for op in supported_ops():
        module = MODULES.get(op, op.lower())
        if not os.path.isfile(os.path.join(folder, f"{module}.py")):
            continue
        start = len(pkg._NodeTestCases)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(f"{pkg.__name__}.{module}")
        for case in pkg._NodeTestCases[start:]:
            if not re.search(r"_expanded(_ver\d+)?$", case.name) and case.model is not None:
                found[op].append(case)
    return dict(found)


def _arrays(values):
    """Case data as NumPy arrays (some cases store TensorProtos)."""
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v for v in values]


def _bind(model, values: dict):
    """A copy of ``model`` whose inputs named in ``values`` are initializers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = [v for v in model.graph.input if v.name not in values]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k)
                                   for k, v in values.items())
    return model


def _close(got, want, case, rtol=RTOL) -> bool:
    want = np.asarray(want)
    if np.shape(got) != want.shape:
        return False
    if want.dtype.kind in "biu" or want.dtype == bool:
        return np.array_equal(got, want)
    atol = max(getattr(case, "atol", 0.0) or 0.0, 1e-6)
    return np.allclose(np.asarray(got, np.float64), want.astype(np.float64), rtol=rtol,
                       atol=atol, equal_nan=True)


def run_as_network(case) -> str:
    """'pass' (rtol 1e-4), 'pass at the case's rtol' (its expected values are printed to 4
    digits) or raises: VolnetError (refused) / AssertionError (wrong result)."""
    names = [v.name for v in case.model.graph.input]
    verdict = "pass"
    for inputs, outputs in case.data_sets:
        inputs, outputs = _arrays(inputs), _arrays(outputs)
        net = load_with_quiet_notes(_bind(case.model, dict(zip(names[1:], inputs[1:]))))
        x = np.asarray(inputs[0])
        if x.dtype.kind != "f":
            raise AssertionError("a non-float input reached the network")   # refused earlier
        got = net.forward(x.astype(np.float32) if x.dtype != np.float64 else x)
        if len(outputs) == 1 and not _close(got, outputs[0], case) \
                and _close(got, outputs[0], case, rtol=case.rtol):
            verdict = "pass at the case's rtol"
        elif len(outputs) != 1 or not _close(got, outputs[0], case):
            raise AssertionError(f"{case.name}: volnet's output differs from the expected one")
    return verdict


def run_as_folding(case) -> str:
    """Evaluate every node with all inputs constant, through volnet's folding pass."""
    model = case.model
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for inputs, outputs in case.data_sets:
        inputs, outputs = _arrays(inputs), _arrays(outputs)
        values = dict(zip([v.name for v in model.graph.input], inputs))
        for node in model.graph.node:
            if node.op_type not in FOLDERS:
                raise VolnetError(f"{node.op_type} does not fold")
            a = attrs(node, onnx)
            outs = fold(node, a, [values[t] if t else None for t in node.input], opset)
            values.update(zip(node.output, outs))
        if any(o.name not in values for o in model.graph.output):
            raise VolnetError("an output is not produced by folding")
        for value, want in zip((values[o.name] for o in model.graph.output), outputs):
            if not _close(value, want, case):
                raise AssertionError(f"{case.name}: folded value differs from the expected one")
    return "folded"


def load_with_quiet_notes(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_onnx(model)


def outcome(case) -> tuple[str, str]:
    """('pass' | 'folded' | 'refused', refusal message). Wrong results raise AssertionError."""
    try:
        return run_as_network(case), ""
    except VolnetError as err:
        refusal = str(err)
    try:
        return run_as_folding(case), ""
    except VolnetError:
        return "refused", refusal


def reason(message: str) -> str:
    """A short, stable reason for the table from a refusal message."""
    patterns = [
        (r"element type|computes in floating point", "integer/bool/bfloat16 input"),
        (r"only enlarges", "Resize that shrinks the map"),
        (r"keep_aspect_ratio_policy", "Resize keeping the aspect ratio"),
        (r"coordinate_transformation_mode", "Resize other than PyTorch's nearest/bilinear"),
        (r"only H and W may be resized", "Resize of N or C"),
        (r"crops the same number|explicit output shape|not supported for ConvTranspose",
         "ConvTranspose with asymmetric pads, output_shape or auto_pad"),
        (r"not a tensor", "sequence/optional input"),
        (r"per-example sizes must be\s+known", "symbolic per-example sizes"),
        (r"a cast .* to|casts between", "cast to a non-float type"),
        (r"exactly one input and one output", "several outputs"),
        (r"varies along the batch|differs from row to row", "constant varies along the batch"),
        (r"batch axis|keep the batch", "acts on the batch axis (axis 0)"),
        (r"is a constant where volnet|computed from the graph input", "weight computed at run time"),
        (r"not supported by volnet's importer", "uses an operator outside the list"),
        (r"dilat", "dilated pooling"),
        (r"is not a product over the last", "MatMul by a 1-D or stacked (3-D+) constant"),
        (r"\(Pow\), Y: an exponent of shape", "Pow with a non-scalar exponent"),
        (r"training", "training-mode outputs"),
        (r"2-D|\(N, C, H, W\)|spatial axes", "not 2-D (N, C, H, W)"),
        (r"constant \(it does not depend", "output does not depend on the input"),
        (r"computed tensors|joins a computed tensor", "two computed operands / constant concat"),
        (r"padding is not supported", "non-constant padding mode"),
        (r"pads", "padding outside H, W"),
    ]
    for pattern, text in patterns:
        if re.search(pattern, message):
            return text
    return message[:60]


def table(results) -> str:
    """Markdown: operator | cases | pass | refused with reason."""
    rows = ["| operator | cases | pass | refused (reason: count) |", "| --- | --- | --- | --- |"]
    for op in sorted(results):
        outcomes = results[op]
        passed = sum(o != "refused" for o, _ in outcomes)
        folded = sum(o == "folded" for o, _ in outcomes)
        loose = sum(o.startswith("pass at") for o, _ in outcomes)
        why = collections.Counter(reason(msg) for o, msg in outcomes if o == "refused")
        text = "; ".join(f"{k}: {v}" for k, v in sorted(why.items())) or "-"
        note = ", ".join(([f"{folded} folded"] if folded else [])
                         + ([f"{loose} at the case's rtol 1e-3"] if loose else []))
        note = f" ({note})" if note else ""
        rows.append(f"| {op} | {len(outcomes)} | {passed}{note} | {text} |")
    total = sum(len(v) for v in results.values())
    passed = sum(o != "refused" for v in results.values() for o, _ in v)
    rows.append(f"| **all** | **{total}** | **{passed}** | |")
    return "\n".join(rows) + "\n"


def run_all():
    return {op: [outcome(case) for case in cases] for op, cases in collect().items()}


if __name__ == "__main__":
    sys.stdout.write(table(run_all()))
