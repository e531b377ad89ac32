"""``volnet summary MODEL``: the lecture's shape and parameter table for a zoo model."""

from __future__ import annotations

from volnet.models.registry import INPUT_SHAPES, build


def parse_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' -> (3, 224, 224)."""
    from volnet.errors import ConfigError

    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input must look like 3x224x224 (C x H x W), got {text!r}")
    return shape


def add_parser(sub):
    p = sub.add_parser("summary", help="print output volumes and parameter counts of a model")
    p.add_argument("model", help="a zoo model name, e.g. lenet5, alexnet, vgg16")
    p.add_argument("--input", type=parse_shape, default=None, help="input volume CxHxW")
    return p


def run(args) -> int:
    net = build(args.model)
    shape = args.input or INPUT_SHAPES[args.model]
    print(net)
    print(f"input {shape} -> output {net.output_shape(shape)}; {net.num_params():,} parameters")
    return 0
