"""Routes of the lecture pages: their files and one JSON endpoint (or two) per page.

Every endpoint reads integers and names from the query string, checked against
fixed ranges and tables; only the dense page takes a body (an uploaded PNG).
"""

from __future__ import annotations

import threading
from typing import ClassVar

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from volnet.web.imaging import decode_png
from volnet.web.lecture import backprop, conv, dense, dilated, fields, patterns
from volnet.web.replies import int_query
from volnet.web.session import DemoSession

HTML, JS = "text/html; charset=utf-8", "text/javascript; charset=utf-8"
PAGE_NAMES = ("conv", "backprop", "receptive-field", "dense", "patterns", "dilated")


def _name_query(request: Request, name: str, choices, default: str) -> str:
    value = request.query_params.get(name, default)
    if value not in choices:
        raise HTTPException(400, f"query parameter {name} must be one of "
                                 f"{', '.join(choices)}, got {value!r}")
    return value


def _ints(request: Request, limits: dict, defaults: dict) -> dict:
    return {name: int_query(request, name, defaults[name], *limits[name]) for name in defaults}


class LecturePages:
    """Route handlers of the lecture pages; the dense page also reads the session's net."""

    ASSETS: ClassVar[dict[str, tuple[str, str]]] = {
        **{f"/lecture/{name}": (f"lecture-{name}.html", HTML) for name in PAGE_NAMES},
        **{f"/static/lecture-{name}.js": (f"lecture-{name}.js", JS) for name in PAGE_NAMES},
        "/static/lecture.js": ("lecture.js", JS),
        "/static/lecture.css": ("lecture.css", "text/css; charset=utf-8"),
    }
    BODY_LIMITS: ClassVar[dict[str, int]] = {"/api/lecture/dense": 2 * 1024 * 1024,              # an uploaded PNG
                   "/api/lecture/dense/checkpoint": 8 * 1024 * 1024}   # a small classifier

    def __init__(self, session: DemoSession) -> None:
        self.session = session
        self.checkpoint = None           # (net, input_shape, mean, std) of the last upload
        self._checkpoint_lock = threading.Lock()   # its net keeps forward caches

    def routes(self) -> list:
        return [
            Route("/api/lecture/conv", self.conv), Route("/api/lecture/backprop", self.backprop),
            Route("/api/lecture/fields/models", self.field_models),
            Route("/api/lecture/fields/layers", self.field_layers),
            Route("/api/lecture/fields", self.fields),
            Route("/api/lecture/dense", self.dense, methods=["GET", "POST"]),
            Route("/api/lecture/dense/checkpoint", self.dense_checkpoint, methods=["POST"]),
            Route("/api/lecture/patterns", self.patterns),
            Route("/api/lecture/dilated", self.dilated),
        ]

    async def conv(self, request: Request) -> JSONResponse:
        values = _ints(request, {**conv.LIMITS, "cell": (0, 10**6)},
                       {"W": 5, "D": 3, "F": 3, "S": 2, "P": 1, "K": 2, "seed": 0, "cell": 0})
        return JSONResponse(conv.conv_view(**values))

    async def backprop(self, request: Request) -> JSONResponse:
        values = _ints(request, backprop.LIMITS, {"W": 5, "F": 3, "K": 2, "seed": 0, "cell": 0})
        pool_size = int_query(request, "pool_W", 4, 2, 8)
        return JSONResponse({"conv": backprop.conv_backprop_view(**values),
                             "pool": backprop.maxpool_backprop_view(pool_size, values["seed"])})

    async def field_models(self, request: Request) -> JSONResponse:
        return JSONResponse({"models": list(fields.MODELS)})

    async def field_layers(self, request: Request) -> JSONResponse:
        name = _name_query(request, "model", fields.MODELS, "lenet5")   # built on first use
        return JSONResponse({"model": name,
                             "layers": await run_in_threadpool(fields.layer_choices, name)})

    async def fields(self, request: Request) -> JSONResponse:
        name = _name_query(request, "model", fields.MODELS, "lenet5")
        layer = request.query_params.get("layer", "")
        row, col = int_query(request, "row", 0, 0, 4096), int_query(request, "col", 0, 0, 4096)
        return JSONResponse(await run_in_threadpool(fields.field_view, name, layer, row, col))

    async def dense(self, request: Request) -> JSONResponse:
        """GET: held-out digits side by side; POST: the uploaded PNG. Query: classifier, stride."""
        classifier = _name_query(request, "classifier", ("session", "checkpoint", *dense.ZOO),
                                 "session")
        stride = int_query(request, "stride", 0, 0, 64) or None    # 0: the net's own stride
        data, labels = self.session.data, []
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0].strip() != "image/png":
                raise HTTPException(415, "send the picture as image/png")
            body = await request.body()
            image = await run_in_threadpool(lambda: dense.fit_upload(decode_png(body)))
        else:
            image, labels = dense.digit_strip(data.x_test, data.y_test)
        mean, std = float(data.mean[0]), float(data.std[0])
        if classifier == "session":
            result = await run_in_threadpool(self.session.read, lambda snap: dense.dense_view(
                snap.net, image, snap.choice.input_shape, stride, mean, std))
        elif classifier == "checkpoint":
            if self.checkpoint is None:
                raise HTTPException(409, "upload a checkpoint first (a .safetensors file saved "
                                         "by the training page or volnet train)")
            net, shape, mean, std = self.checkpoint

            def run():
                with self._checkpoint_lock:
                    return dense.dense_view(net, image, shape, stride, mean, std)
            result = await run_in_threadpool(run)
        else:
            net, shape = dense.zoo_classifier(classifier)
            result = await run_in_threadpool(dense.dense_view, net, image, shape, stride, mean, std)
        return JSONResponse({"classifier": classifier, "labels": labels, **result})

    async def dense_checkpoint(self, request: Request) -> JSONResponse:
        """Make an uploaded checkpoint the dense page's "checkpoint" classifier."""
        if request.headers.get("content-type", "").split(";")[0].strip() != \
                "application/octet-stream":
            raise HTTPException(415, "send the checkpoint as application/octet-stream")
        body = await request.body()
        loaded = await run_in_threadpool(dense.load_classifier, body)
        with self._checkpoint_lock:
            self.checkpoint = loaded
        return JSONResponse({"input_shape": list(loaded[1]),
                             "params": int(loaded[0].num_params())})

    async def patterns(self, request: Request) -> JSONResponse:
        numbers = {k: v for k, v in patterns.DEFAULTS.items() if k != "widths"}
        values = _ints(request, patterns.LIMITS, numbers)
        values["widths"] = patterns.parse_widths(request.query_params.get("widths"), values["M"])
        return JSONResponse(await run_in_threadpool(lambda: patterns.pattern_view(**values)))

    async def dilated(self, request: Request) -> JSONResponse:
        values = _ints(request, {"scene": (0, dilated.SCENES - 1), "row": (0, 63), "col": (0, 63)},
                       {"scene": 0, "row": 32, "col": 32})
        return JSONResponse(await run_in_threadpool(dilated.dilated_view, values["scene"],
                                                    values["row"], values["col"]))
