"""``volnet demo``: a local page that trains a ConvNet live and shows what every layer does.

Start it with ``volnet demo`` (or :func:`serve`); :class:`DemoServer` runs it
from a thread, and :class:`DemoApp` is the ASGI app itself for embedding.
"""

from volnet.web.app import DemoApp
from volnet.web.netspec import parse_net
from volnet.web.server import DemoServer, serve
from volnet.web.session import DemoSession, Settings

__all__ = ["DemoApp", "DemoServer", "DemoSession", "Settings", "parse_net", "serve"]
