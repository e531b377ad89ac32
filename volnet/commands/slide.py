"""``volnet slide MODEL IMAGE``: slide a classifier over a bigger image (dense evaluation).

Prints the classes with the highest probability averaged over every crop
position and, with ``--out``, writes a PNG with one heat-map panel per class
over the image: each pixel shows the probability of the crop whose centre is
nearest to it.
"""

from __future__ import annotations

import io
import os

import numpy as np

from volnet.commands.summary import parse_shape
from volnet.errors import CheckpointError, ConfigError, DataError


def add_parser(sub):
    p = sub.add_parser("slide", help="score every crop position of a bigger image (FC->CONV)")
    p.add_argument("model", help="a checkpoint (.safetensors from volnet train) or a zoo model "
                   "name (random weights), e.g. cifar_example, vgg16")
    p.add_argument("image", help="a PNG/JPEG file")
    p.add_argument("--stride", type=int, default=None,
                   help="pixels between crops; default the net's own stride (32 for VGG); "
                        "finer strides use shift-and-stitch")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize the image to H x W first (default: keep its size)")
    p.add_argument("--input", type=parse_shape, default=None,
                   help="the classifier's input CxHxW (default: from the checkpoint or zoo)")
    p.add_argument("--weights", default=None,
                   help="pretrained weights for a zoo model (.pth/.safetensors, or 'imagenet' "
                        "to download torchvision's); ImageNet weights print ImageNet class names "
                        "and normalise with ImageNet's mean and std")
    p.add_argument("--top", type=int, default=5, help="how many classes to print")
    p.add_argument("--exact", action="store_true",
                   help="score crop by crop where zero padding makes the dense pass differ")
    p.add_argument("--out", default=None, help="write heat maps of the top classes to this PNG")
    p.add_argument("--panels", type=int, default=3, help="classes drawn in --out (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return p


def run(args) -> int:
    from volnet.commands.outputs import OutputPlan
    from volnet.data.batches import BatchIterator
    from volnet.tools.dense import dense_scores
    from volnet.tools.fully_conv import to_fully_conv

    if args.top < 1 or args.panels < 1:
        raise ConfigError(f"--top and --panels must be >= 1, got {args.top} and {args.panels}")
    OutputPlan(args.overwrite).add("--out", args.out)   # before the model and image are read
    net, prep, shape, source = _load_model(args.model, args.input, args.weights)
    pixels = _read_image(args.image, shape[0], args.size)
    x = BatchIterator(pixels[None], np.zeros(1, np.int64), mean=prep.get("mean"),
                      std=prep.get("std")).transform(pixels[None])[0]
    fc = to_fully_conv(net, shape)
    scores = dense_scores(fc, x, args.stride, exact=args.exact)
    probs = _softmax_map(scores)
    mean = probs.mean(axis=(1, 2))   # the lecture's "evaluate at many positions and average"
    names = prep.get("class_names") or [str(k) for k in range(len(mean))]
    step = (args.stride, args.stride) if args.stride else fc.stride
    print(f"{source} on {args.image} ({x.shape[1]}x{x.shape[2]}): {shape[1]}x{shape[2]} crops at "
          f"stride {step[0]}x{step[1]} -> {scores.shape[1]}x{scores.shape[2]} positions"
          + ("" if fc.exact or args.exact else " (zero padding: positions see neighbouring pixels)"))
    print(f"top classes, probability averaged over {scores.shape[1] * scores.shape[2]} positions:")
    top = np.argsort(-mean)[:args.top]
    for k in top:
        i, j = (int(v) for v in np.unravel_index(probs[k].argmax(), probs[k].shape))
        print(f"  {names[k]:>12s}  {mean[k]:.4f}  (max {probs[k, i, j]:.4f}, crop at "
              f"y={i * step[0]}, x={j * step[1]})")
    if args.out:
        _write_heatmaps(args.out, pixels, probs, top[:args.panels], names, shape[1:], step)
        print(f"heat maps of {min(args.panels, len(top))} classes written to {args.out}")
    return 0


def _load_model(model: str, input_shape, weights=None):
    """(net, preprocessing, input shape, description) from a checkpoint file or a zoo name."""
    from volnet.commands.checks import check_classes, check_normalisation, check_shape, num_outputs
    from volnet.models.registry import INPUT_SHAPES, MODELS, build
    from volnet.tools.dense import infer_input_shape

    if os.path.isfile(model):
        from volnet.io.checkpoint import load

        if weights:
            raise ConfigError("--weights is for a zoo model name; a checkpoint holds its own "
                              "weights")
        net = load(model)
        prep = dict(getattr(net, "preprocessing", {}) or {})
        recorded = tuple(prep.get("input_shape") or ())
        if input_shape and recorded:
            check_shape(model, recorded, input_shape, "--input")
        shape = tuple(input_shape or recorded or infer_input_shape(net))
        check_normalisation(model, prep, shape[0])
        prep["class_names"] = check_classes(model, prep, num_outputs(net, shape, model), None, "")
        return net, prep, shape, f"checkpoint {model}"
    if model not in MODELS:
        raise CheckpointError(f"{model!r} is neither a checkpoint file nor a zoo model; zoo "
                              f"models: {', '.join(sorted(MODELS))}")
    shape = tuple(input_shape or INPUT_SHAPES[model])
    if not weights:
        return build(model), {}, shape, f"{model} (random weights)"
    from volnet.data import imagenet
    from volnet.models.registry import pretrained

    net = pretrained(model, weights)
    if num_outputs(net, shape, model) != 1000:
        return net, {}, shape, f"{model} ({weights})"
    has_transform = any(name == "transform_input" for name, _ in net.named_children())
    mean, std = (imagenet.MEAN, imagenet.STD) if has_transform else imagenet.NORMS.get(
        model, (imagenet.MEAN, imagenet.STD))
    prep = {"mean": list(mean), "std": list(std), "class_names": list(imagenet.class_names())}
    return net, prep, shape, f"{model} ({weights}, ImageNet)"


def _read_image(path: str, channels: int, size) -> np.ndarray:
    """uint8 (C, H, W): the file at its own size, or resized to ``size`` (H, W)."""
    from PIL import Image, UnidentifiedImageError

    from volnet.data.images import MAX_PIXELS, load_image

    if not os.path.isfile(path):
        raise DataError(f"{path}: no such image file")
    if size is None:
        try:   # reads the header only: the size, before anything is decoded
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: cannot read image: {err}") from None
        if width * height > MAX_PIXELS:
            raise DataError(f"{path}: {width}x{height} exceeds the {MAX_PIXELS}-pixel limit; "
                            "pass --size H W to scale it down")
        size = (height, width)
    if min(size) < 1:
        raise ConfigError(f"--size must be positive, got {size}")
    return load_image(path, (channels, *size))


def _softmax_map(scores: np.ndarray) -> np.ndarray:
    """(K, H, W) scores -> probabilities over K at every position."""
    shifted = np.exp(scores - scores.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def _nearest_cell(length: int, crop: int, step: int, cells: int) -> np.ndarray:
    """For each pixel, the map cell whose crop centre (i*step + crop/2) is nearest."""
    centre_offset = crop / 2 - step / 2
    return np.clip(np.floor((np.arange(length) - centre_offset) / step), 0, cells - 1).astype(int)


def _write_heatmaps(path, pixels, probs, classes, names, crop, step) -> None:
    """Panels side by side: the image in grey with a black-red-yellow-white heat overlay."""
    from PIL import Image, ImageDraw

    from volnet.io.atomic_file import atomic_write

    grey = pixels.astype(np.float32).mean(axis=0) / 255
    rows = _nearest_cell(grey.shape[0], crop[0], step[0], probs.shape[1])
    cols = _nearest_cell(grey.shape[1], crop[1], step[1], probs.shape[2])
    panels = []
    for k in classes:
        low, high = float(probs[k].min()), float(probs[k].max())
        heat = probs[k][rows[:, None], cols[None, :]]
        heat = (heat - low) / max(high - low, 1e-12)   # each panel spans its own range
        rgb = np.stack([np.clip(3 * heat, 0, 1), np.clip(3 * heat - 1, 0, 1),
                        np.clip(3 * heat - 2, 0, 1)], axis=-1)
        blend = 0.45 * grey[..., None] + 0.55 * rgb
        panel = Image.fromarray((blend * 255).round().astype(np.uint8))
        canvas = Image.new("RGB", (panel.width, panel.height + 14), "black")
        canvas.paste(panel, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), f"{names[k]}: {low:.3f}-{high:.3f}", fill="white")
        panels.append(canvas)
    sheet = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "black")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * panels[0].width, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())
