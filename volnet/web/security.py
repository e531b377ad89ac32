"""The demo's front door: Host allow-list, same-origin + token on writes, body size caps.

A page on any website can make the browser send requests to 127.0.0.1, and a
DNS-rebinding site can even make them look same-origin; so every request must
name an allowed Host, every POST must carry the per-server token (which only
the demo's own page receives) and, when the browser sends an Origin, the page's
own: same scheme (http), host and port as the Host the request was sent to.
Bodies need a Content-Length under the route's cap, checked before reading, and
a JSON body may nest at most ``MAX_JSON_DEPTH`` levels (400 otherwise), so no
handler ever parses a document deep enough to exhaust Python's recursion.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

from volnet.limits import MAX_JSON_DEPTH, json_depth

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
TOKEN_HEADER = "x-volnet-token"


def host_name(value: str) -> str:
    """The host part of a Host header or an origin netloc, without the port.

    Example:
        >>> host_name("localhost:8000"), host_name("[::1]:80"), host_name("127.0.0.1")
        ('localhost', '::1', '127.0.0.1')
    """
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_port(value: str, default: int = 80) -> int | None:
    """The port of a Host header (``default`` when absent); None when malformed.

    Example:
        >>> host_port("localhost:8000"), host_port("[::1]"), host_port("x:y")
        (8000, 80, None)
    """
    value = value.strip()
    tail = value[value.find("]") + 1:] if value.startswith("[") else (
        value[value.rfind(":"):] if value.count(":") == 1 else "")
    if not tail:
        return default
    if not re.fullmatch(r":[0-9]{1,5}", tail):
        return None
    return int(tail[1:])


def same_origin(origin: str, host: str) -> bool:
    """True when ``origin`` is ``http://<host>`` exactly: scheme, host name and port.

    Example:
        >>> same_origin("http://127.0.0.1:8000", "127.0.0.1:8000")
        True
        >>> same_origin("http://127.0.0.1:9999", "127.0.0.1:8000")   # another local server
        False
    """
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port or 80
    except ValueError:
        return False
    return (parts.scheme.lower() == "http" and not parts.path and parts.hostname is not None
            and parts.hostname == host_name(host) and origin_port == host_port(host))


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware enforcing the rules above before the app sees a request.

    Args:
        app: The wrapped ASGI app.
        token: The secret every POST and WebSocket must present.
        allowed_hosts: Host names (no port) the server answers to.
        body_limits: Largest body in bytes per POST path; other paths get ``default_limit``.
    """

    def __init__(self, app, token: str, allowed_hosts=LOOPBACK_HOSTS,
                 body_limits: dict[str, int] | None = None, default_limit: int = 16 * 1024):
        self.app, self.token = app, token
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.body_limits, self.default_limit = body_limits or {}, default_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._check(scope, headers)
        if problem is not None:
            status, message = problem
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008, "reason": message})
            return await _reply(send, status, message)
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
            receive = _capped(receive, int(headers["content-length"]))
            if headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
                body = await _read_body(receive)
                if body is None:
                    return None   # the client went away
                depth = json_depth(body)
                if depth > MAX_JSON_DEPTH:
                    return await _reply(send, 400, f"the JSON body nests {depth} levels deep; "
                                                   f"the limit is {MAX_JSON_DEPTH}")
                receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    def _check(self, scope, headers) -> tuple[int, str] | None:
        if host_name(headers.get("host", "")) not in self.allowed_hosts:
            return 403, (f"Host {headers.get('host', '')!r} is not served here; open the demo at "
                         "http://127.0.0.1:<port>/ (DNS-rebinding protection)")
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, headers.get("host", "")):
            return 403, (f"cross-origin request from {origin!r} refused (the page's origin is "
                         f"http://{headers.get('host', '')})")
        if scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("token", [""])[0] != self.token:
                return 403, "WebSocket needs the page's token"
            return None
        if scope["method"] in ("GET", "HEAD"):
            return None
        if scope["method"] != "POST":
            return 405, f"method {scope['method']} not allowed"
        if headers.get(TOKEN_HEADER) != self.token:
            return 403, "POST needs the X-Volnet-Token header the demo page sends; reload the page"
        return self._check_length(scope["path"], headers)

    def _check_length(self, path: str, headers) -> tuple[int, str] | None:
        length = headers.get("content-length")
        if length is None or not re.fullmatch(r"[0-9]{1,15}", length):
            return 411, "POST needs a Content-Length header (chunked bodies are not accepted)"
        limit = self.body_limits.get(path, self.default_limit)
        if int(length) > limit:
            return 413, f"request body of {int(length):,} bytes is over this endpoint's {limit:,}-byte limit"
        return None


async def _read_body(receive) -> bytes | None:
    """The whole (already size-capped) request body; None if the client disconnected."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the body already read, then the real messages."""
    sent = False

    async def wrapped():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped


def _capped(receive, limit: int):
    """Wrap ``receive`` so a body longer than its declared Content-Length is cut off."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return wrapped
