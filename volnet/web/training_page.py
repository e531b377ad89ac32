"""The training page (``/``): build a net, train it live, draw digits, look inside.

Its routes read and drive the one shared :class:`DemoSession`.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from volnet.web import views
from volnet.web.imaging import decode_png, mnist_style
from volnet.web.networks import CHOICES
from volnet.web.replies import int_query, json_body
from volnet.web.session import DemoSession

GRID_SIZE = 100        # held-out digits shown in the grid and offered for the activation view
PUSH_INTERVAL = 0.5    # seconds between WebSocket status messages


class TrainingPage:
    """Route handlers of the training page, bound to one session.

    Attributes:
        ASSETS: URL -> (file in volnet/web/static, content type) of the page's files.
        BODY_LIMITS: Largest POST body per path (JSON bodies get the 16 KB default).
    """

    ASSETS: ClassVar[dict[str, tuple[str, str]]] = {
        "/": ("index.html", "text/html; charset=utf-8"),
        "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
        "/static/charts.js": ("charts.js", "text/javascript; charset=utf-8"),
        "/static/style.css": ("style.css", "text/css; charset=utf-8"),
        # every page's "working..." badge (the lecture and GAN pages load it from here)
        "/static/working.js": ("working.js", "text/javascript; charset=utf-8"),
    }
    BODY_LIMITS: ClassVar[dict[str, int]] = {"/api/predict": 512 * 1024}   # PNG drawings

    def __init__(self, session: DemoSession) -> None:
        self.session = session
        self.sprite = self._sprite()

    def routes(self) -> list:
        return [
            Route("/api/models", self.models), Route("/api/net", self.get_net),
            Route("/api/net", self.post_net, methods=["POST"]),
            Route("/api/train", self.train, methods=["POST"]),
            Route("/api/status", self.status), Route("/api/filters", self.filters),
            Route("/api/activations", self.activations), Route("/api/grid", self.grid),
            Route("/api/test-digits.png", self.digits_png),
            Route("/api/predict", self.predict, methods=["POST"]),
            Route("/api/checkpoint", self.checkpoint), WebSocketRoute("/ws", self.websocket),
        ]

    def _sprite(self) -> bytes:
        """The first ``GRID_SIZE`` held-out digits as one PNG strip (28 px tall, 28 px each)."""
        import io

        from PIL import Image

        digits = self.session.data.x_test[:GRID_SIZE, 0]
        strip = np.concatenate(list(digits), axis=1)
        buffer = io.BytesIO()
        Image.fromarray(strip).save(buffer, format="PNG")
        return buffer.getvalue()

    async def digits_png(self, request: Request) -> Response:
        return Response(self.sprite, media_type="image/png")

    # ---- the network and training ----------------------------------------------------
    async def models(self, request: Request) -> JSONResponse:
        from volnet.web.netspec import EXAMPLE

        return JSONResponse({"choices": CHOICES, "example": EXAMPLE})

    def _net_payload(self) -> dict:
        return self.session.read(lambda snap: {   # net and choice from one snapshot
            "model": snap.choice.kind, "layers": snap.choice.spec,
            "input_shape": list(snap.choice.input_shape),
            **views.summary_rows(snap.net, snap.choice.input_shape)})

    async def get_net(self, request: Request) -> JSONResponse:
        return JSONResponse(self._net_payload())

    async def post_net(self, request: Request) -> JSONResponse:
        body = await json_body(request)
        kind, spec = body.get("model"), body.get("layers", "")
        if not isinstance(kind, str) or not isinstance(spec, str):
            raise HTTPException(400, 'send {"model": "lenet5" | "cifar_example" | "custom", '
                                     '"layers": "conv 8 5 pad2, relu, pool 2, fc 10"}')
        await run_in_threadpool(self.session.select, kind, spec)
        return JSONResponse(self._net_payload())

    async def train(self, request: Request) -> JSONResponse:
        body = await json_body(request)
        action, settings = body.get("action"), body.get("settings") or {}
        if not isinstance(settings, dict):
            raise HTTPException(400, "settings must be an object such as {\"lr\": 0.002}")
        controls = {"start": lambda: self.session.start(settings), "pause": self.session.pause,
                    "resume": self.session.resume, "reset": self.session.reset}
        if not isinstance(action, str) or action not in controls:
            raise HTTPException(400, f"action must be one of {', '.join(controls)}, got {action!r}")
        await run_in_threadpool(controls[action])
        return JSONResponse(self._status())

    async def status(self, request: Request) -> JSONResponse:
        train_from = int_query(request, "train_from", 0, 0, 10**9)
        held_from = int_query(request, "held_from", 0, 0, 10**9)
        stats_from = int_query(request, "stats_from", 0, 0, 10**9)
        return JSONResponse(self._status(train_from, held_from, stats_from))

    def _status(self, train_from: int = 0, held_from: int = 0, stats_from: int = 0) -> dict:
        """The session's status plus the layer statistics after ``stats_from``."""
        stats = self.session.layer_stats
        return {**self.session.status(train_from, held_from),
                "layer_stats": stats.since(stats_from), "layer_stats_next": len(stats.samples)}

    # ---- looking inside ---------------------------------------------------------------
    async def filters(self, request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(self.session.read, lambda snap: (
            views.first_layer_filters(snap.net, snap.choice.input_shape))))

    async def activations(self, request: Request) -> JSONResponse:
        index = int_query(request, "index", 0, 0, GRID_SIZE - 1)
        data = self.session.data
        result = await run_in_threadpool(self.session.read, lambda snap: views.activations(
            snap.net, snap.inputs(data.x_test[index:index + 1])))
        return JSONResponse({"index": index, "label": int(data.y_test[index]), **result})

    async def grid(self, request: Request) -> JSONResponse:
        data = self.session.data
        probs = await run_in_threadpool(self.session.read, lambda snap: snap.net.predict(
            snap.inputs(data.x_test[:GRID_SIZE])))
        predicted = probs.argmax(axis=1)
        return JSONResponse({"labels": data.y_test[:GRID_SIZE].tolist(),
                             "predicted": predicted.tolist(),
                             "confidence": probs.max(axis=1).round(4).tolist(),
                             "accuracy": float((predicted == data.y_test[:GRID_SIZE]).mean())})

    async def predict(self, request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "image/png":
            raise HTTPException(415, "send the drawing as image/png")
        body = await request.body()
        digit = await run_in_threadpool(lambda: mnist_style(decode_png(body)))
        pixels = np.uint8(np.rint(digit * 255))[None, None]
        probs = await run_in_threadpool(self.session.read, lambda snap: snap.net.predict(
            snap.inputs(pixels))[0])
        return JSONResponse({"probs": probs.astype(float).round(6).tolist(),
                             "predicted": int(probs.argmax()),
                             "input": views.to_grey(digit) if digit.any() else [0] * 784})

    async def checkpoint(self, request: Request) -> Response:
        """The snapshot's weights as a volnet checkpoint (``volnet.load`` rebuilds the net)."""
        kind, body = await run_in_threadpool(self.session.checkpoint_bytes)
        name = f"volnet-demo-{kind}.safetensors"
        return Response(body, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # ---- live updates -------------------------------------------------------------------
    async def websocket(self, ws: WebSocket) -> None:
        """Push the status and new metrics to one tab every ``PUSH_INTERVAL`` seconds."""
        await ws.accept()
        train_from = held_from = stats_from = 0
        run = None
        try:
            while True:
                status = self._status(train_from, held_from, stats_from)
                if status["run"] != run:   # a new net or a reset: resend the history from 0
                    status, run = self._status(), status["run"]
                train_from, held_from = status["train_next"], status["held_out_next"]
                stats_from = status["layer_stats_next"]
                await ws.send_json(status)
                await asyncio.sleep(PUSH_INTERVAL)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return   # the tab went away
