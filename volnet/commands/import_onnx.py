"""``volnet import MODEL.onnx [--out NET.safetensors] [--mean M --std S --scale F
--class-names FILE]``: an ONNX file as a volnet checkpoint that records how to feed it."""

from __future__ import annotations

import os


def add_parser(sub):
    from volnet.commands.summary import parse_shape

    p = sub.add_parser(
        "import", help="convert an ONNX model into a volnet checkpoint",
        description="Read an ONNX file (PyTorch, Caffe2 or Keras exports; opsets 7-21) into a "
                    "volnet network and save it as a checkpoint that vn.load, volnet summary, "
                    "predict, slide and finetune accept. The preprocessing recorded by "
                    "vn.io.export_onnx (input shape, mean, std, class names) travels with it; "
                    "--mean/--std/--scale/--class-names record it for files that lack it.")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--out", default=None, help="checkpoint path (default: MODEL with the "
                   "suffix .safetensors); an existing file is refused unless --overwrite")
    p.add_argument("--input", type=parse_shape, default=None, metavar="CxHxW",
                   help="input volume, needed when the file leaves C/H/W symbolic")
    p.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]",
                   help="per-channel mean the model was trained with, on the --scale scale "
                        "(e.g. 0.5 or 0.485,0.456,0.406); recorded in the checkpoint")
    p.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]",
                   help="per-channel std, as --mean; inputs are (pixels * scale - mean) / std")
    p.add_argument("--scale", default=None, metavar="F",
                   help="what 0-255 pixels are multiplied by before --mean/--std (default "
                        "1/255; 1 for models trained on raw pixels)")
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="a text file with one class name per line, in output order")
    p.add_argument("--overwrite", action="store_true")
    return p


def _floats(text: str) -> list[float]:
    import argparse

    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list "
                                         "of numbers (e.g. 0.485,0.456,0.406)")
    return values


def _read_names(path: str) -> list[str]:
    """One class name per line (blank lines skipped), from a regular text file."""
    from volnet.errors import ConfigError, DataError
    from volnet.limits import check_budget, open_regular

    with open_regular(path, DataError) as f:
        check_budget(os.fstat(f.fileno()).st_size, f"--class-names {path}", error=DataError)
        try:
            text = f.read().decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"--class-names {path} is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"--class-names {path} holds no names (one per line)")
    return names


def _given_preprocessing(args, net) -> dict:
    """--mean/--std/--scale/--class-names checked against the network, as they are recorded."""
    from volnet.commands.preprocessing import from_record, parse_scale, scale_text
    from volnet.errors import ConfigError

    prep = {}
    if args.scale is not None:
        prep["scale"] = scale_text(parse_scale(args.scale))
    for key in ("mean", "std"):
        if getattr(args, key) is not None:
            prep[key] = getattr(args, key)
    if prep:
        prep.setdefault("scale", "x / 255")
        if len(net.input_shape) != 3:
            raise ConfigError(f"--mean/--std/--scale describe images, but {args.model} takes "
                              f"input of shape {list(net.input_shape)}")
        if any(v <= 0 for v in prep.get("std") or [1.0]):
            raise ConfigError(f"--std {prep['std']} must be > 0")
        from_record(prep, net.input_shape[0], "--mean/--std")   # channel counts checked here
    if args.class_names:
        names = _read_names(args.class_names)
        outputs = net.output_shape(net.input_shape)
        if len(outputs) != 1 or outputs[0] != len(names):
            raise ConfigError(f"--class-names {args.class_names} lists {len(names)} names but "
                              f"{args.model} gives outputs of shape {list(outputs)}")
        prep["class_names"] = names
    return prep


def run(args) -> int:
    import warnings

    from volnet.commands.outputs import OutputPlan
    from volnet.io.checkpoint import save
    from volnet.io.onnx.importer import load_onnx

    out = OutputPlan(args.overwrite).add(
        "--out", args.out or os.path.splitext(args.model)[0] + ".safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the notes are printed below instead
        net = load_onnx(args.model, input_shape=args.input)
    for note in net.import_notes:
        print(f"note: {note}")
    given = _given_preprocessing(args, net)
    prep = dict(net.preprocessing)
    if given.keys() & {"mean", "std", "scale"}:
        # what the command line says replaces the file's statistics, never half of them
        prep = {k: v for k, v in prep.items() if k not in ("mean", "std", "scale")}
    prep.update(given)
    save(out, net, preprocessing=prep)
    shape = "x".join(map(str, net.input_shape))
    print(f"{args.model}: {len(net.nodes)} nodes, {net.num_params():,} parameters, input "
          f"{shape} -> output {'x'.join(map(str, net.output_shape(net.input_shape)))}")
    if any(prep.get(k) is not None for k in ("mean", "std", "scale")):
        print(f"preprocessing recorded: pixels {prep.get('scale') or 'x / 255'}, mean "
              f"{prep.get('mean')}, std {prep.get('std')}")
    else:
        print("no preprocessing recorded: predict, evaluate, slide and finetune will feed "
              "pixels / 255 and say so; pass --mean/--std (and --scale) to record another")
    print(f"saved {out}")
    return 0
