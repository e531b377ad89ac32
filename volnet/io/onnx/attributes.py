"""Reading ONNX node attributes into the forms volnet's layers take, and the one way every
importer refusal is worded (node, operator, attribute, what would work)."""

from __future__ import annotations

import math

from volnet.errors import ConfigError


def refuse(node, attribute: str, problem: str, fix: str) -> ConfigError:
    """The importer's error: ``ONNX node 'n' (Op), attribute: problem; fix``."""
    name = node.name or (node.output[0] if node.output else "")
    where = f"{attribute}: " if attribute else ""
    return ConfigError(f"ONNX node {name!r} ({node.op_type}), {where}{problem}; {fix}")


def nshape(shape) -> str:
    """A per-example shape as the batch it describes: (4, 5) -> "(N, 4, 5)"."""
    return "(" + ", ".join(["N", *map(str, shape)]) + ")"


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
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def pair(node, a: dict, key: str, default=(1, 1)):
    """A 2-D window attribute (kernel_shape, strides, dilations) as (h, w)."""
    value = a.get(key, default)
    if len(value) != 2:
        raise refuse(node, key, f"{list(value)} has {len(value)} spatial axes",
                     "volnet imports 2-D operators on (N, C, H, W) tensors only")
    return tuple(int(v) for v in value)


def window_pads(node, a: dict, size, kernel, stride, dilation):
    """ONNX padding as (top, left, bottom, right), auto_pad resolved for input ``size`` (H, W).

    SAME_UPPER / SAME_LOWER pad so that out = ceil(in / stride), the odd pixel at the end
    (UPPER) or the start (LOWER); VALID pads nothing; NOTSET reads ``pads``.
    """
    mode = a.get("auto_pad", "NOTSET") or "NOTSET"
    if mode == "VALID":
        return (0, 0, 0, 0)
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if mode == "SAME_UPPER" else big)
            end.append(big if mode == "SAME_UPPER" else small)
        return (*begin, *end)
    if mode != "NOTSET":
        raise refuse(node, "auto_pad", f"unknown value {mode!r}",
                     "use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    values = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    if len(values) != 4:
        raise refuse(node, "pads", f"{values} is not 2-D padding",
                     "volnet imports 2-D operators: pads [top, left, bottom, right]")
    if min(values) < 0:
        raise refuse(node, "pads", f"negative pads {values} crop the input",
                     "export with non-negative pads")
    return tuple(values)
