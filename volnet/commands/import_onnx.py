"""``volnet import MODEL.onnx [--out NET.safetensors]``: an ONNX file as a volnet checkpoint."""

from __future__ import annotations

import os


def add_parser(sub):
    from volnet.commands.summary import parse_shape

    p = sub.add_parser(
        "import", help="convert an ONNX model into a volnet checkpoint",
        description="Read an ONNX file (PyTorch, Caffe2 or Keras exports; opsets 7-21) into a "
                    "volnet network and save it as a checkpoint that vn.load, volnet summary, "
                    "predict, slide and finetune accept. The preprocessing recorded by "
                    "vn.io.export_onnx (input shape, mean, std, class names) travels with it.")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--out", default=None, help="checkpoint path (default: MODEL with the "
                   "suffix .safetensors); an existing file is refused unless --overwrite")
    p.add_argument("--input", type=parse_shape, default=None, metavar="CxHxW",
                   help="input volume, needed when the file leaves C/H/W symbolic")
    p.add_argument("--overwrite", action="store_true")
    return p


def run(args) -> int:
    import warnings

    from volnet.commands.outputs import OutputPlan
    from volnet.io.checkpoint import save
    from volnet.io.onnx_import import load_onnx

    out = OutputPlan(args.overwrite).add(
        "--out", args.out or os.path.splitext(args.model)[0] + ".safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # the notes are printed below instead
        net = load_onnx(args.model, input_shape=args.input)
    for note in net.import_notes:
        print(f"note: {note}")
    prep = dict(net.preprocessing)
    save(out, net, preprocessing=prep)
    shape = "x".join(map(str, net.input_shape))
    print(f"{args.model}: {len(net.nodes)} nodes, {net.num_params():,} parameters, input "
          f"{shape} -> output {'x'.join(map(str, net.output_shape(net.input_shape)))}")
    print(f"saved {out}")
    return 0
