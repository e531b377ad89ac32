"""``volnet demo``: serve the live training page on this machine."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("demo", help="train a ConvNet live in the browser and look inside it")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return p


def run(args) -> int:
    from volnet.web.server import serve

    return serve(args.host, args.port, open_browser=not args.no_browser)
