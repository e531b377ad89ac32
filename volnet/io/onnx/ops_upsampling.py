"""ONNX operators that make maps larger: ConvTranspose (the adjoint of Conv) and Resize
(nearest or bilinear, as PyTorch's ``Upsample`` exports it). Registered with ``@handles``."""

from __future__ import annotations

from volnet.io.onnx.attributes import pair, refuse
from volnet.io.onnx.registry import handles
from volnet.layers import ConvTranspose2d, Upsample


@handles("ConvTranspose")
def conv_transpose(imp, node, a):
    source = imp.computed(node)
    w = imp.const(node, 1, "W (weight)")
    if w.ndim != 4:
        raise refuse(node, "W", f"weight shape {w.shape} is not a 2-D transposed convolution",
                     "volnet imports ConvTranspose over (N, C, H, W) with a 4-D weight")
    if "output_shape" in a:
        raise refuse(node, "output_shape", "an explicit output shape is not supported",
                     "export with pads and output_padding instead")
    if (a.get("auto_pad", "NOTSET") or "NOTSET") not in ("NOTSET", "VALID"):
        raise refuse(node, "auto_pad", f"{a['auto_pad']} is not supported for ConvTranspose",
                     "export with explicit pads (auto_pad NOTSET)")
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])] if a.get("auto_pad", "NOTSET") \
        in ("NOTSET", None) else [0, 0, 0, 0]
    if len(pads) != 4 or pads[:2] != pads[2:] or min(pads) < 0:
        raise refuse(node, "pads", f"{pads}: volnet's ConvTranspose2d crops the same number of "
                     "pixels at both ends", "export with symmetric, non-negative pads")
    group = int(a.get("group", 1))
    bias = imp.const(node, 2, "B (bias)", optional=True)
    layer = ConvTranspose2d(w.shape[0], w.shape[1] * group, w.shape[2:],
                            stride=pair(node, a, "strides"), padding=tuple(pads[:2]),
                            output_padding=tuple(int(v) for v in a.get("output_padding", [0, 0])),
                            groups=group, bias=bias is not None,
                            dilation=pair(node, a, "dilations"))
    layer.params["weight"][...] = w
    if bias is not None:
        layer.params["bias"][...] = bias
    imp.add_layer(node, layer, source, weight_index=1)


@handles("Resize", "Upsample")
def resize(imp, node, a):
    source = imp.computed(node)
    _, h, w = imp.shape(source)
    mode = {"nearest": "nearest", "linear": "bilinear"}.get(a.get("mode", "nearest"))
    value, sizes = _resize_target(imp, node, a, (h, w))
    target = value if sizes else (value[0] * h, value[1] * w)
    if target[0] < h or target[1] < w:
        raise refuse(node, "sizes" if sizes else "scales", f"{list(value)} shrinks the "
                     f"{h}x{w} map", "volnet's Upsample only enlarges maps; downsample with a "
                     "pooling layer")
    whole = all(float(t / n).is_integer() for t, n in zip(target, (h, w)))
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    rounding = a.get("nearest_mode", "round_prefer_floor")
    if node.op_type == "Upsample":     # opset 7-9: asymmetric coordinates, floor
        coord, rounding = "asymmetric", "floor"
    # PyTorch's nearest is asymmetric + floor; for whole scale factors half_pixel with
    # round_prefer_floor picks the same pixels. Its bilinear is half_pixel (clamped at 0).
    nearest_ok = (coord == "asymmetric" and rounding == "floor") or (
        whole and coord in ("half_pixel", "pytorch_half_pixel") and rounding == "round_prefer_floor")
    linear_ok = coord in ("half_pixel", "pytorch_half_pixel") and not a.get("antialias", 0)
    if mode is None or (mode == "nearest" and not nearest_ok) or \
            (mode == "bilinear" and not linear_ok):
        raise refuse(node, "mode", f"mode={a.get('mode', 'nearest')}, "
                     f"coordinate_transformation_mode={coord}, nearest_mode={rounding}",
                     "volnet imports PyTorch's nearest (asymmetric, floor) and bilinear "
                     "(align_corners=False, half_pixel) resizing")
    if sizes:
        layer = Upsample(size=tuple(int(v) for v in value), mode=mode)
    else:
        layer = Upsample(scale_factor=tuple(value), mode=mode)
    imp.add_layer(node, layer, source)


def _resize_target(imp, node, a, spatial):
    """((H', W') sizes or (sH, sW) scales, True when sizes) from the node's inputs."""
    if node.op_type == "Upsample" and a.get("scales") is not None:
        given, value = None, [float(v) for v in a["scales"]]
    else:
        inputs = (1,) if node.op_type == "Upsample" else (2, 3)
        given = [i for i in inputs if i < len(node.input) and node.input[i] != ""]
        if not given:
            raise refuse(node, "scales", "neither scales nor sizes is given",
                         "give constant scales or sizes")
        value = [float(v) for v in imp.const(node, given[0], "scales/sizes").reshape(-1)]
    sizes = node.op_type == "Resize" and given == [3]
    axes = [int(v) % 4 for v in a.get("axes", range(4 - len(value), 4))]
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise refuse(node, "keep_aspect_ratio_policy", f"{a['keep_aspect_ratio_policy']!r} "
                     "derives the sizes at run time", "export with the default 'stretch'")
    if len(axes) != len(value):
        raise refuse(node, "axes", f"axes {axes} for {value}", "resize axes 2 and 3 only")
    full = dict(zip(axes, value))
    keep = {0: 1.0, 1: 1.0} if not sizes else {0: None, 1: float(imp.shape(node.input[0])[0])}
    for axis in (0, 1):
        if axis in full and (keep[axis] is not None and full[axis] != keep[axis]):
            raise refuse(node, "scales", f"{value}: only H and W may be resized",
                         "resize the two spatial axes only")
    if 2 not in full or 3 not in full:
        raise refuse(node, "axes", f"axes {axes}: only H and W may be resized",
                     "resize axes 2 and 3 together")
    return (full[2], full[3]), sizes
