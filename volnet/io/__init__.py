"""Reading and writing weights: safetensors checkpoints, PyTorch files, ONNX graphs.

Nothing here unpickles user files: PyTorch ``.pth`` files go through an
allow-listed unpickler (:func:`load_torch`); ``onnx``/``onnxruntime`` are
optional and imported only when an ONNX function is called.
"""

from volnet.io._optional import MissingDependencyError
from volnet.io.onnx.export import export_onnx
from volnet.io.onnx.importer import load_onnx
from volnet.io.onnx.registry import register_onnx_exporter
from volnet.io.torch_load import load_torch
from volnet.io.weights import fetch_weights, load_weights

__all__ = [
           "MissingDependencyError",
           "export_onnx",
           "fetch_weights",
           "load_onnx",
           "load_torch",
           "load_weights",
           "register_onnx_exporter",
]
