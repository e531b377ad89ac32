"""The demo's ASGI app: a fixed route table, assembled from the pages, over one shared session.

Each page is a class in ``PAGES`` with ``ASSETS`` (URL -> file in
volnet/web/static and content type), ``BODY_LIMITS`` (POST path -> byte cap)
and ``routes()``; adding a page means adding it there. No route takes a path
from the request: the pages' files are read from the package once, at
start-up, into a table keyed by URL. Every error a request can cause becomes a
4xx JSON ``{"error": message}`` that the page shows.
"""

from __future__ import annotations

import secrets
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from volnet.errors import VolnetError
from volnet.web.lecture.page import LecturePages
from volnet.web.replies import SECURITY_HEADERS, error, status_of
from volnet.web.security import LOOPBACK_HOSTS, Guard
from volnet.web.session import DemoSession
from volnet.web.training_page import TrainingPage

PAGES = (TrainingPage, LecturePages)


class DemoApp:
    """The pages' route handlers bound to one session; ``asgi`` is the guarded ASGI callable.

    Args:
        session: The shared training run.
        token: Secret the page must present on POST and WebSocket (random if None).
        allowed_hosts: Host names accepted in the Host header.
    """

    def __init__(self, session: DemoSession, token: str | None = None,
                 allowed_hosts=LOOPBACK_HOSTS) -> None:
        self.session = session
        self.token = token or secrets.token_urlsafe(24)
        self.pages = [page(session) for page in PAGES]
        self.assets = self._load_assets()
        routes = [Route(url, self.asset, methods=["GET", "HEAD"]) for url in self.assets]
        body_limits = {}
        for page in self.pages:
            routes += page.routes()
            body_limits.update(page.BODY_LIMITS)
        app = Starlette(routes=routes, exception_handlers={
            HTTPException: self._http_error, VolnetError: self._volnet_error,
            Exception: self._unexpected})
        app.router.redirect_slashes = False
        self.asgi = Guard(app, self.token, allowed_hosts, body_limits)

    # ---- errors -------------------------------------------------------------------
    async def _http_error(self, request, exc: HTTPException):
        detail = exc.detail if exc.status_code != 404 else f"no such page: {request.url.path}"
        return error(exc.status_code, detail)

    async def _volnet_error(self, request, exc: VolnetError):
        return error(status_of(exc), str(exc))

    async def _unexpected(self, request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}): {exc}")

    # ---- the pages' files -----------------------------------------------------------------
    def _load_assets(self) -> dict[str, tuple[bytes, str]]:
        static = resources.files("volnet.web") / "static"
        return {url: ((static / name).read_bytes(), kind)
                for page in self.pages for url, (name, kind) in page.ASSETS.items()}

    async def asset(self, request: Request) -> Response:
        body, kind = self.assets[request.url.path]
        if kind.startswith("text/html"):   # every page gets the token its POSTs must carry
            body = body.replace(b"{{TOKEN}}", self.token.encode())
        return Response(body, media_type=kind, headers=SECURITY_HEADERS)
