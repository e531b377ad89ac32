"""Running the demo: bind a socket (loopback by default), serve with uvicorn, stop cleanly."""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading

import uvicorn

from volnet.errors import ConfigError
from volnet.web.app import DemoApp
from volnet.web.security import LOOPBACK_HOSTS
from volnet.web.session import DemoSession, Settings

DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost".

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one), with a clear error."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); choose another "
                          "--port or stop the program using it") from None
    sock.listen(64)
    return sock


class DemoServer:
    """The demo app on a bound socket; ``run()`` blocks, ``start()``/``stop()`` use a thread.

    Args:
        host: Address to bind; 127.0.0.1 unless you mean to expose the demo.
        port: TCP port; 0 picks a free one (see ``url``).
        settings: Training settings for the session.
        data: The dataset; the bundled MNIST sample by default.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = 8000,
                 settings: Settings | None = None, data=None) -> None:
        if data is None:
            from volnet.data.datasets import load_mnist_sample

            data = load_mnist_sample()
        allowed = set(LOOPBACK_HOSTS) | ({host.lower()} if host not in ("0.0.0.0", "::") else set())
        self.session = DemoSession(data, settings)
        self.app = DemoApp(self.session, allowed_hosts=allowed)
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(self.app.asgi, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2, ws_max_size=64 * 1024)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}/"

    def run(self) -> None:
        """Serve until Ctrl-C (uvicorn turns SIGINT into a graceful shutdown)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> DemoServer:
        """Serve from a background thread (tests, notebooks); returns once accepting."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="volnet-demo-server", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.02)
        return self

    def stop(self) -> None:
        """Stop a server started with ``start()`` and the training run."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.close()

    def close(self) -> None:
        self.session.close()
        self.sock.close()


def serve(host: str = DEFAULT_HOST, port: int = 8000, open_browser: bool = True) -> int:
    """Start the demo, print its address, open a browser tab, serve until Ctrl-C."""
    server = DemoServer(host, port)
    if host in ("0.0.0.0", "::"):
        print(f"note: listening on {host}, but only requests addressed to 127.0.0.1/localhost "
              "are answered (Host check); pass this machine's address as --host to serve it",
              file=sys.stderr)
    elif not is_loopback(host):
        print(f"warning: listening on {host}, reachable from other machines; the demo has no "
              "login. Use the default 127.0.0.1 unless you mean this.", file=sys.stderr)
    print(f"volnet demo at {server.url}  (Ctrl-C stops it)", flush=True)
    if open_browser:
        import webbrowser

        threading.Timer(0.5, webbrowser.open, args=(server.url,)).start()
    try:
        server.run()
    except KeyboardInterrupt:   # uvicorn shuts down gracefully, then re-raises the Ctrl-C
        pass
    print("volnet demo stopped", flush=True)
    return 0
