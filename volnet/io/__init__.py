"""Reading and writing weights: safetensors checkpoints, PyTorch files, ONNX graphs.

Nothing here unpickles user files: PyTorch ``.pth`` files go through an
allow-listed unpickler (:func:`load_torch`); ``onnx``/``onnxruntime`` are
optional and imported only when an ONNX function is called.
"""

from volnet.io._optional import MissingDependencyError
from volnet.io.onnx_export import export_onnx, register_onnx_exporter
from volnet.io.onnx_graph import Graph, Node, Reshape
from volnet.io.onnx_import import load_onnx
from volnet.io.torch_load import load_torch
from volnet.io.weights import fetch_weights, load_weights

__all__ = [
           "Graph",
           "MissingDependencyError",
           "Node",
           "Reshape",
           "export_onnx",
           "fetch_weights",
           "load_onnx",
           "load_torch",
           "load_weights",
           "register_onnx_exporter",
]
