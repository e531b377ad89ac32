"""``volnet weights MODEL...``: download torchvision's pretrained ImageNet weights (verified, cached)."""

from __future__ import annotations

import os


def add_parser(sub):
    p = sub.add_parser("weights", help="download pretrained ImageNet weights for zoo models")
    p.add_argument("models", nargs="*", help="zoo model names, e.g. resnet18 vgg16")
    p.add_argument("--list", action="store_true", help="list the models with published weights")
    p.add_argument("--cache", default=None, help="folder for the files (default: the volnet "
                   "cache, $VOLNET_CACHE/weights)")
    p.add_argument("--mirror", default=None, help="base URL to download from instead of "
                   "download.pytorch.org (http://, https:// or file://)")
    return p


def run(args) -> int:
    from volnet.errors import ConfigError
    from volnet.io.weights import WEIGHTS, fetch_weights, weights_dir

    if args.list:
        folder = args.cache or weights_dir()
        for name, file in sorted(WEIGHTS.items()):
            state = "cached" if os.path.isfile(os.path.join(folder, file)) else "not downloaded"
            print(f"{name:20s} {file:36s} {state}")
        return 0
    if not args.models:
        raise ConfigError("name the models to download (e.g. volnet weights resnet18), or "
                          "pass --list")
    for name in args.models:
        path = fetch_weights(name, cache=args.cache, base_url=args.mirror)
        print(f"{name}: {path}")
    return 0
