"""The ``volnet`` command. Each subcommand lives in ``volnet/commands/<name>.py`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only wires them up."""

from __future__ import annotations

import argparse
import importlib
import sys

from volnet.errors import VolnetError

# Subcommand modules under volnet.commands, in the order ``volnet --help`` lists them.
COMMANDS = [
    "summary",
    "train",
    "generate",
    "evaluate",
    "predict",
    "segment",
    "slide",
    "demo",
    "weights",
    "finetune",
    "import_onnx",
]


def build_parser() -> argparse.ArgumentParser:
    from volnet import __version__

    parser = argparse.ArgumentParser(
        prog="volnet", description="ConvNets on NumPy: train, inspect and run CS231n-style networks.")
    parser.add_argument("--version", action="version", version=f"volnet {__version__}")
    parser.add_argument("--max-bytes", default=None, metavar="SIZE",
                        help="memory budget for any file or dataset read (e.g. 8G; default "
                             "$VOLNET_MAX_BYTES or 2G); inputs needing more are refused")
    parser.add_argument("--strict-files", action="store_true",
                        help="refuse checkpoints of older formats, whose checksum does not "
                             "cover their architecture and metadata (by default they load "
                             "with a warning)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"volnet.commands.{name}")
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    import contextlib

    from volnet.io.checkpoint import strict_files
    from volnet.limits import budget

    args = build_parser().parse_args(argv)
    try:
        with budget(args.max_bytes) if args.max_bytes else contextlib.nullcontext(), \
                strict_files(args.strict_files):
            return int(args._run(args) or 0)
    except VolnetError as err:
        print(f"volnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"volnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
