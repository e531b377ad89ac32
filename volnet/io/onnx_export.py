"""Export a volnet network to an ONNX file (inference graph, float32, dynamic batch).

Each layer type has a small converter that appends ONNX nodes; containers
recurse (``Sequential`` chains, ``Residual`` adds, ``Concat`` concatenates
along channels). Parameters become initializers named by their state-dict
keys (``features.0.weight``), so an exported file reads like the network.
Dropout exports as Identity (inference). ``onnx`` is imported only here.
"""

from __future__ import annotations

import os
import tempfile

# importing the converter modules registers them (containers, leaf layers, imported ops)
import volnet.io.onnx_export_containers
import volnet.io.onnx_export_layers
import volnet.io.onnx_export_ops  # noqa: F401
from volnet.io._optional import require
from volnet.io.onnx_export_registry import (
    EXPORTERS,
    _Builder,
    _emit,
    register_onnx_exporter,
)
from volnet.io.onnx_metadata import preprocessing_props

__all__ = ["EXPORTERS", "OPSET", "export_onnx", "register_onnx_exporter", "to_onnx_model"]

OPSET = 17


def to_onnx_model(net, input_shape: tuple[int, ...], opset: int = OPSET, check: bool = True,
                  preprocessing: dict | None = None):
    """Build the ``onnx.ModelProto`` of ``net`` for per-example ``input_shape`` (C, H, W).

    ``check`` runs ONNX's model checker on the result (``export_onnx`` checks the file instead).
    ``preprocessing`` (default ``net.preprocessing``, which checkpoints and imports carry):
    mean, std and class names, written to ``metadata_props`` with the input shape.
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from onnx import TensorProto, helper, numpy_helper

    input_shape = tuple(int(d) for d in input_shape)
    out_shape = net.output_shape(input_shape)   # fails early, naming the layer, on a bad shape
    b = _Builder(helper, numpy_helper)
    b.names.add("input")
    out, _ = _emit(net, b, "input", input_shape, "")
    b.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    graph = helper.make_graph(
        b.nodes, "volnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *out_shape])],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="volnet")
    if preprocessing is None:
        preprocessing = getattr(net, "preprocessing", None) or {}
    helper.set_model_props(model, preprocessing_props(preprocessing, input_shape))
    if check:
        onnx.checker.check_model(model)
    return model


def export_onnx(net, path, input_shape: tuple[int, ...], opset: int = OPSET,
                preprocessing: dict | None = None):
    """Write ``net`` as an ONNX file for inputs (N, *input_shape), N dynamic.

    The file is written to a temporary name and renamed, so an existing file is
    never left half-written; it gets the usual permissions (0666 less the umask).
    Parameters are stored as float32. The input shape and, where known, the mean,
    std and class names (``preprocessing``, default ``net.preprocessing``) go into
    ``metadata_props`` as ``volnet.input_shape``, ``volnet.mean``, ... (JSON), so a
    runtime sees that pixels are divided by 255 and normalised; ``load_onnx`` reads
    them back.

    Args:
        net: Any volnet layer or container (zoo models included).
        path: Destination ``.onnx`` file.
        input_shape: Per-example input shape (C, H, W) or (features,).
        opset: ONNX opset version (default 17).
        preprocessing: {"mean", "std", "class_names"} (lists), as checkpoints record it.

    Returns:
        The path written.

    Example:
        >>> import tempfile, os, volnet as vn
        >>> path = os.path.join(tempfile.mkdtemp(), "lenet.onnx")
        >>> export_onnx(vn.models.lenet5(), path, (1, 28, 28)) == path
        True
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from volnet.io.atomic_file import umask

    model = to_onnx_model(net, input_shape, opset, check=False, preprocessing=preprocessing)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=".volnet-", suffix=".onnx.tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~umask())   # mkstemp makes 0600; give the usual file mode
        with os.fdopen(handle, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        onnx.checker.check_model(tmp)   # checked as written, before it takes the final name
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
