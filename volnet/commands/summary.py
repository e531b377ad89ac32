"""``volnet summary MODEL``: the lecture's table of volumes, parameters, costs and fields."""

from __future__ import annotations

import argparse

from volnet.errors import ConfigError
from volnet.models.registry import MODELS


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input must look like 3x224x224 (C x H x W), got {text!r}")
    return shape


def _shape_arg(text: str) -> tuple[int, ...]:
    try:
        return parse_shape(text)
    except ConfigError as err:            # argparse shows this message instead of its own
        raise argparse.ArgumentTypeError(str(err)) from None


def add_parser(sub):
    p = sub.add_parser(
        "summary", help="print a model's volumes, parameters, multiply-adds and receptive fields",
        description="Print the lecture's per-layer table for a zoo model, an .onnx file or a "
                    "volnet checkpoint: output volume, "
                    "F/S/P/K, parameters with and without sharing, multiply-adds, memory, "
                    "receptive field. Computed from shapes alone.")
    p.add_argument("model", help="a zoo model (" + ", ".join(MODELS) + "), an .onnx file or a "
                   "volnet checkpoint")
    p.add_argument("--input", type=_shape_arg, default=None, metavar="CxHxW",
                   help="input volume, e.g. 3x227x227 (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size for the memory totals")
    p.add_argument("--strict", action="store_true",
                   help="fail where a CONV/POOL does not tile its input "
                        "((W - F + 2P)/S + 1 not an integer)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--json", action="store_true", help="print rows and totals as JSON")
    return p


def run(args) -> int:
    from volnet.commands.model_arg import resolve_model
    from volnet.tools.summary import summary

    model = resolve_model(args.model, shapes_only=True)
    shape = args.input or model.input_shape
    if shape is None:
        raise ConfigError(f"{model.description} records no input shape; pass --input CxHxW")
    table = summary(model.net, shape, batch_size=args.batch_size, strict=args.strict)
    if args.json:
        print(table.to_json(indent=1))
    elif args.markdown:
        print(table.to_markdown(), end="")
    else:
        print(table)
        note = LECTURE_NOTES.get(args.model) if tuple(shape) == (3, 224, 224) else None
        if note:
            print(f"note: {note}")
    return 0


# where volnet's totals differ from a number on the lecture's slides, and why
LECTURE_NOTES = {
    "vgg16": "the lecture's VGG-16 table lists these same volumes, from the 224x224x3 input to "
             "the 1x1x1000 scores; they add up to 15,237,608, and volnet's 25,088 more are "
             "torchvision's AdaptiveAvgPool2d(7) (7x7x512, an identity at 224). The slide's "
             "'TOTAL memory: 24M * 4 bytes ~= 93MB / image' is not the sum of its own column "
             "(15.2M, 58 MiB); counting the 13.6M outputs run in place (ReLU, dropout, "
             "flatten) as well would give 28.9M.",
}
