"""The demo's GAN page: a DCGAN trained live, its samples from one fixed noise batch.

``/gan`` shows 64 digits that the generator draws from the same 64 noise vectors
after every few steps, so a viewer watches blobs turn into digits, next to the two
losses. Training runs in a background thread through the same Trainer, step,
optimizers and schedule as ``volnet train dcgan``
(:func:`volnet.train.generative.make_trainer`); the page reads a PNG snapshot, never
the networks being trained; with no page polling, the run pauses itself. Routes are
registered by ``volnet.web.app``.
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

from volnet.data.batches import BatchIterator
from volnet.data.datasets import Dataset
from volnet.train import generative as gen
from volnet.train.images import grid, png_bytes
from volnet.web.replies import SECURITY_HEADERS, int_query, json_body

IDLE, TRAINING, PAUSED, DONE = "idle", "training", "paused", "done"
ASSETS = {"/gan": ("gan.html", "text/html; charset=utf-8"),
          "/static/gan.js": ("gan.js", "text/javascript; charset=utf-8")}


class GanSession:
    """One live DCGAN run: start, pause, resume, reset; a sample grid every ``every`` steps.

    Built like the classifier's :class:`~volnet.web.session.DemoSession`: the run is
    ``Trainer.fit`` in a background thread with ``volnet train dcgan``'s step,
    optimizers and schedule (:func:`volnet.train.generative.make_trainer`); a
    callback records the losses, draws the samples and holds the trainer when
    nobody is watching: with no status request for ``idle_after`` seconds (every
    tab closed) the run pauses itself, and the next request resumes it.

    Args:
        data: the digits (the bundled MNIST sample); labels are not used.
        batch_size: images per step. every: steps between sample grids.
        max_steps: the run ends after this many steps. seed: weights, batches and noise.
        idle_after: seconds without a status request before the run pauses itself.
    """

    def __init__(self, data: Dataset, batch_size: int = 32, every: int = 10,
                 max_steps: int = 3000, seed: int = 0, idle_after: float = 10.0) -> None:
        self.x = data.x_train.astype(np.float32) / 127.5 - 1.0
        self.y = data.y_train
        self.batch_size, self.every, self.max_steps, self.seed = batch_size, every, max_steps, seed
        self.idle_after = idle_after
        self.fixed_z = np.random.default_rng(seed + 1000).standard_normal(
            (64, gen.LATENT["dcgan"], 1, 1)).astype(np.float32)
        self._lock = threading.RLock()        # guards state, losses and the snapshot
        self._control = threading.RLock()     # serialises starts and resets
        self._thread: threading.Thread | None = None
        self._trainer = None
        self.last_seen = time.monotonic()
        self.unwatched = False                # paused by the watchdog, not by a viewer
        self.reset()

    def _batches(self) -> BatchIterator:
        return BatchIterator(self.x, self.y, self.batch_size, seed=self.seed, drop_last=True)

    def reset(self) -> None:
        """Stop any run and start over from fresh weights."""
        with self._control:
            self._halt()
            net = gen.build("dcgan", self.seed)
            with self._lock:
                self.net = net
                self.state, self.losses, self.run = IDLE, [], getattr(self, "run", 0) + 1
                self.seconds, self.step, self.unwatched = 0.0, 0, False
                self._snapshot()

    def _snapshot(self) -> None:
        """Draw the fixed noise batch through a copy of the generator (inference mode)."""
        g = self.net.generator.copy()
        images = (g.forward(self.fixed_z) + 1.0) / 2.0
        self.samples_png, self.samples_step = png_bytes(grid(images, cols=8)), self.step

    def start(self) -> None:
        """Start the run (resume it when paused); a finished run needs a reset first."""
        with self._control, self._lock:
            if self.state == PAUSED:
                return self.resume()
            if self.state in (TRAINING, DONE):
                return
            per_epoch = len(self._batches())
            self._trainer = gen.make_trainer("dcgan", self.net, self.seed, self.max_steps,
                                             callbacks=[_Recorder(self)], progress=False)
            self.state, self.last_seen = TRAINING, time.monotonic()
            epochs = -(-self.max_steps // per_epoch)
            self._thread = threading.Thread(target=self._run, args=(self._trainer, epochs),
                                            name="volnet-demo-gan", daemon=True)
            self._thread.start()

    def _run(self, trainer, epochs: int) -> None:
        """The training thread: ``Trainer.fit`` until max_steps, a stop or a failure."""
        try:
            trainer.fit(self._batches(), epochs)
            final = DONE if trainer.step >= self.max_steps else IDLE
        except Exception:  # noqa: BLE001 - the page shows the run as finished; the server lives on
            final = DONE
        with self._lock:
            if self._trainer is trainer:   # not superseded by a reset meanwhile
                self._snapshot()
                self.state = final

    def pause(self) -> None:
        with self._lock:
            if self.state == TRAINING:
                self._trainer.pause()
                self.state, self.unwatched = PAUSED, False

    def resume(self) -> None:
        with self._lock:
            if self.state == PAUSED:
                self.state, self.unwatched = TRAINING, False
                self._trainer.resume()

    def _halt(self) -> None:
        """Ask the training thread to stop and wait for it (it checks at every batch end)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._trainer.stop()
            thread.join()
        self._thread = self._trainer = None

    close = _halt

    def watched(self) -> None:
        """A page asked for the status: note the time; resume a run paused for want of one."""
        with self._lock:
            self.last_seen = time.monotonic()
            if self.unwatched:
                self.resume()

    def status(self, since: int = 0) -> dict:
        with self._lock:
            return {"state": self.state, "run": self.run, "step": self.step,
                    "max_steps": self.max_steps, "samples_step": self.samples_step,
                    "seconds": round(self.seconds, 2), "losses": self.losses[since:],
                    "next": len(self.losses), "unwatched": self.unwatched}

    def samples(self) -> bytes:
        with self._lock:
            return self.samples_png


class _Recorder:
    """Trainer callback of the GAN session: losses, samples, max_steps, the idle watchdog."""

    def __init__(self, session: GanSession) -> None:
        self.session = session

    def on_batch_end(self, trainer, logs: dict) -> None:
        session = self.session
        with session._lock:
            if session._trainer is not trainer:   # a reset replaced this run
                return trainer.stop()
            session.step = logs["step"]
            session.seconds += session.batch_size / max(logs["images_per_s"], 1e-9)   # step time
            session.losses.append({"step": logs["step"], "d_loss": round(logs["d_loss"], 4),
                                   "g_loss": round(logs["g_loss"], 4)})
            if logs["step"] % session.every == 0:
                session._snapshot()
            if logs["step"] >= session.max_steps:
                return trainer.stop()
            if session.state == TRAINING and \
                    time.monotonic() - session.last_seen > session.idle_after:
                trainer.pause()            # every tab closed: hold the CPU until one asks again
                session._snapshot()
                session.state, session.unwatched = PAUSED, True


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
        body, kind = self.assets[request.url.path]
        return Response(body.replace(b"{{TOKEN}}", self.token.encode()), media_type=kind,
                        headers=SECURITY_HEADERS)

    async def status(self, request: Request) -> JSONResponse:
        since = int_query(request, "since", 0, 0, 10**9)
        self.session.watched()
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
