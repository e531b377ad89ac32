"""ONNX operators that make maps larger: ConvTranspose (the adjoint of Conv) and Resize
(nearest or bilinear, as PyTorch's ``Upsample`` exports it). Registered with ``@handles``."""

from __future__ import annotations

from volnet.io._onnx_attrs import pair, refuse
from volnet.io.onnx_import import handles
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
    mode = {"nearest": "nearest", "linear": "bilinear"}.get(a.get("mode", "nearest"))
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    nearest_ok = coord == "asymmetric" and a.get("nearest_mode", "round_prefer_floor") == "floor"
    linear_ok = coord in ("half_pixel", "pytorch_half_pixel")
    if node.op_type == "Upsample":     # opset 7-9: asymmetric coordinates, floor
        nearest_ok, linear_ok = True, False
    if mode is None or (mode == "nearest" and not nearest_ok) or \
            (mode == "bilinear" and not linear_ok):
        raise refuse(node, "mode", f"mode={a.get('mode', 'nearest')}, "
                     f"coordinate_transformation_mode={coord}",
                     "volnet imports PyTorch's nearest (asymmetric, floor) and bilinear "
                     "(align_corners=False, half_pixel) resizing")
    if node.op_type == "Upsample":
        given = [1] if len(node.input) > 1 else []
        scales = a.get("scales")
        value = [float(v) for v in scales] if scales is not None else None
    else:
        given = [i for i in (2, 3) if i < len(node.input) and node.input[i] != ""]
        value = None
    if value is None:
        if not given:
            raise refuse(node, "scales", "neither scales nor sizes is given",
                         "give constant scales or sizes")
        value = [float(v) for v in imp.const(node, given[0], "scales/sizes").reshape(-1)]
    sizes = node.op_type == "Resize" and given and given[0] == 3
    batch_and_channels = value[:2] == ([1.0, 1.0] if not sizes else value[:2])
    if len(value) != 4 or not batch_and_channels or (sizes and int(value[1]) != imp.shape(
            source)[0]):
        raise refuse(node, "scales", f"{value}: only H and W may be resized",
                     "resize the two spatial axes only")
    if sizes:
        layer = Upsample(size=tuple(int(v) for v in value[2:]), mode=mode)
    else:
        layer = Upsample(scale_factor=tuple(value[2:]), mode=mode)
    imp.add_layer(node, layer, source)
