"""What every page's handlers share: JSON errors, body and query parsing, response headers.

Every error a request can cause becomes a 4xx JSON ``{"error": message}`` that
the page shows; these helpers raise the ``HTTPException`` that becomes it.
"""

from __future__ import annotations

import json
import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from volnet.errors import StateError, VolnetError

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                               "connect-src 'self'; style-src 'self'; "
                                               "script-src 'self'; object-src 'none'; "
                                               "base-uri 'none'; frame-ancestors 'none'"}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def status_of(err: VolnetError) -> int:
    return 409 if isinstance(err, StateError) else 400


async def json_body(request: Request) -> dict:
    """The request's JSON object, or a VolnetError-free 4xx."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise HTTPException(415, "send the body as application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name, str(default))
    if not re.fullmatch(r"[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise HTTPException(400, f"query parameter {name} must be an integer in [{low}, {high}], "
                                 f"got {text!r}")
    return int(text)
