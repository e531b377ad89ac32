"""Reading ONNX node attributes and constants into the forms volnet's layers take."""

from __future__ import annotations

import numpy as np

from volnet.errors import ConfigError


def per_channel(node, value: np.ndarray, channels: int | None) -> list[float]:
    """Constants of shape (C,), (C, 1, 1) or (1, C, 1, 1) as C floats, else a ConfigError."""
    squeezed = np.asarray(value, dtype=np.float64)
    if squeezed.ndim >= 1 and squeezed.shape[0] == 1 and squeezed.ndim == 4:
        squeezed = squeezed[0]
    ok = squeezed.ndim >= 1 and all(d == 1 for d in squeezed.shape[1:])
    if not ok or (channels is not None and squeezed.shape[0] != channels):
        raise ConfigError(f"ONNX {node.op_type} {node.name!r}: a constant of shape "
                          f"{np.shape(value)} is supported only per channel ((1, C, 1, 1)) or "
                          "as the bias of a MatMul")
    return [float(v) for v in squeezed.reshape(-1)]


def scope_path(node_name: str) -> str:
    """PyTorch's exporter names nodes by module scope: "/layer1/layer1.0/conv1/Conv" ->
    "layer1.0.conv1", the module's state-dict prefix."""
    parts: list[str] = []
    for part in node_name.split("/")[1:-1]:
        # a Sequential's children are scoped as "<its name>.<index>": replace, don't append
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def attrs(node, onnx) -> dict:
    """A node's attributes as plain Python values (tensors as NumPy arrays, strings as str)."""
    from onnx import helper

    return {a.name: decode(helper.get_attribute_value(a), onnx) for a in node.attribute}


def decode(value, onnx):
    """One attribute value: TensorProto -> ndarray, bytes -> str, the rest unchanged."""
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    return value


def pair(a: dict, key: str):
    """A 2-D window attribute (kernel_shape, strides, dilations) as (h, w); default (1, 1)."""
    value = a.get(key, [1, 1])
    if len(value) != 2:
        raise ConfigError(f"ONNX attribute {key}={value}: only 2-D operators are supported")
    return tuple(int(v) for v in value)


def pads(node, a: dict):
    """ONNX [top, left, bottom, right] pads as volnet's symmetric (h, w) padding."""
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ConfigError(f"ONNX {node.op_type} {node.name!r}: auto_pad={a['auto_pad']} is not "
                          "supported; export with explicit pads")
    values = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    if values[:2] != values[2:]:
        raise ConfigError(f"ONNX {node.op_type} {node.name!r}: asymmetric pads {values} are not "
                          "supported (volnet pads equally on both sides)")
    return tuple(values[:2])
