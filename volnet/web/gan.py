"""The demo's GAN page: a DCGAN trained live, its samples from one fixed noise batch.

``/gan`` shows 64 digits that the generator draws from the same 64 noise vectors
after every few steps, so a viewer watches blobs turn into digits, next to the two
losses. Training runs in a background thread with the same step as ``volnet train
dcgan`` (:func:`volnet.train.generative.gan_step`); the page reads a PNG snapshot,
never the networks being trained. Routes are registered by ``volnet.web.app``.
"""

from __future__ import annotations

import threading
import time
from importlib import resources

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from volnet.data.datasets import Dataset
from volnet.train import generative as gen
from volnet.train.images import grid
from volnet.web.replies import int_query, json_body

IDLE, TRAINING, PAUSED, DONE = "idle", "training", "paused", "done"
ASSETS = {"/gan": ("gan.html", "text/html; charset=utf-8"),
          "/static/gan.js": ("gan.js", "text/javascript; charset=utf-8")}


def png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


class GanSession:
    """One live DCGAN run: start, pause, resume, reset; a sample grid every ``every`` steps.

    Args:
        data: the digits (the bundled MNIST sample); labels are not used.
        batch_size: images per step. every: steps between sample grids.
        max_steps: the run ends after this many steps. seed: weights, batches and noise.
    """

    def __init__(self, data: Dataset, batch_size: int = 32, every: int = 10,
                 max_steps: int = 3000, seed: int = 0) -> None:
        self.x = data.x_train.astype(np.float32) / 127.5 - 1.0
        self.batch_size, self.every, self.max_steps, self.seed = batch_size, every, max_steps, seed
        self.fixed_z = np.random.default_rng(seed + 1000).standard_normal(
            (64, gen.LATENT["dcgan"], 1, 1)).astype(np.float32)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False
        self.reset()

    def reset(self) -> None:
        """Stop any run and start over from fresh weights."""
        self._halt()
        net = gen.build("dcgan", self.seed)
        with self._lock:
            self.loop = gen._Loop(net, gen._Optimizers("dcgan", net), "dcgan", self.seed)
            self.state, self.losses, self.run = IDLE, [], getattr(self, "run", 0) + 1
            self.seconds = 0.0
            self._snapshot()

    def _snapshot(self) -> None:
        """Draw the fixed noise batch through a copy of the generator (inference mode)."""
        g = self.loop.net.generator.copy()
        images = (g.forward(self.fixed_z) + 1.0) / 2.0
        self.samples_png, self.samples_step = png_bytes(grid(images, cols=8)), self.loop.step

    def start(self) -> None:
        with self._lock:
            if self.state in (TRAINING, PAUSED):
                return
            self.state, self._stop = TRAINING, False
            self._thread = threading.Thread(target=self._train, name="volnet-demo-gan", daemon=True)
            self._thread.start()

    def pause(self) -> None:
        with self._lock:
            if self.state == TRAINING:
                self.state = PAUSED

    def resume(self) -> None:
        with self._lock:
            if self.state == PAUSED:
                self.state = TRAINING
                self._wake.notify_all()

    def _halt(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive():
            with self._lock:
                self._stop = True
                self._wake.notify_all()
            thread.join()
        self._thread = None

    close = _halt

    def _train(self) -> None:
        loop, n = self.loop, self.batch_size
        per_epoch = len(self.x) // n
        order = np.random.default_rng(self.seed).permutation(len(self.x))
        while True:
            with self._lock:
                while self.state == PAUSED and not self._stop:
                    self._wake.wait()
                if self._stop or loop.step >= self.max_steps:
                    if not self._stop:
                        self.state = DONE
                    return
            b = loop.step % per_epoch
            if b == 0 and loop.step:
                order = np.random.default_rng([self.seed, loop.step]).permutation(len(self.x))
            start = time.perf_counter()
            with np.errstate(over="ignore"):
                logs = gen.gan_step(loop, self.x[order[b * n:(b + 1) * n]])
            loop.step += 1
            with self._lock:
                self.seconds += time.perf_counter() - start
                self.losses.append({"step": loop.step, **{k: round(v, 4) for k, v in logs.items()}})
                if loop.step % self.every == 0:
                    self._snapshot()

    def status(self, since: int = 0) -> dict:
        with self._lock:
            return {"state": self.state, "run": self.run, "step": self.loop.step,
                    "max_steps": self.max_steps, "samples_step": self.samples_step,
                    "seconds": round(self.seconds, 2), "losses": self.losses[since:],
                    "next": len(self.losses)}

    def samples(self) -> bytes:
        with self._lock:
            return self.samples_png


class GanPage:
    """The GAN page's routes over one :class:`GanSession` (created on first use)."""

    def __init__(self, data: Dataset, token: str) -> None:
        self.data, self.token, self._session = data, token, None
        static = resources.files("volnet.web") / "static"
        self.assets = {url: ((static / name).read_bytes(), kind) for url, (name, kind) in ASSETS.items()}

    @property
    def session(self) -> GanSession:
        if self._session is None:
            self._session = GanSession(self.data)
        return self._session

    def routes(self) -> list[Route]:
        return [Route(url, self.asset, methods=["GET", "HEAD"]) for url in ASSETS] + [
            Route("/api/gan/status", self.status),
            Route("/api/gan/samples.png", self.samples),
            Route("/api/gan/train", self.train, methods=["POST"])]

    async def asset(self, request: Request) -> Response:
        from volnet.web.app import SECURITY_HEADERS

        body, kind = self.assets[request.url.path]
        return Response(body.replace(b"{{TOKEN}}", self.token.encode()), media_type=kind,
                        headers=SECURITY_HEADERS)

    async def status(self, request: Request) -> JSONResponse:
        since = int_query(request, "since", 0, 0, 10**9)
        return JSONResponse(self.session.status(since))

    async def samples(self, request: Request) -> Response:
        return Response(self.session.samples(), media_type="image/png",
                        headers={"Cache-Control": "no-store"})

    async def train(self, request: Request) -> JSONResponse:
        body = await json_body(request)
        session = self.session
        controls = {"start": session.start, "pause": session.pause, "resume": session.resume,
                    "reset": session.reset}
        action = body.get("action")
        if action not in controls:
            raise HTTPException(400, f"action must be one of {', '.join(controls)}, got {action!r}")
        await run_in_threadpool(controls[action])
        return JSONResponse(session.status())

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
