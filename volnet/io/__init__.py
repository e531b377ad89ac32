"""Reading and writing weights: safetensors checkpoints, PyTorch files, ONNX graphs.

Nothing here unpickles user files: PyTorch ``.pth`` files go through an
allow-listed unpickler (:func:`load_torch`); ``onnx``/``onnxruntime`` are
optional and imported only when an ONNX function is called.
"""

from volnet.io.torch_load import load_torch

__all__ = ["load_torch"]
