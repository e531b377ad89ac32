"""Training the generative zoo models on 28x28 digits: a DCGAN and a convolutional VAE.

``volnet train dcgan`` and ``volnet train vae`` call :func:`train_generative`.

* GAN (Goodfellow et al. 2014; Radford et al. 2016): per batch, one discriminator step
  on real digits (label 0.9: one-sided label smoothing) and generated ones (label 0),
  then one generator step that makes D call the fakes real (label 1, the non-saturating
  loss); both use binary cross-entropy
  on logits and Adam with lr 2e-4, beta1 = 0.5, the lr held for the first half of the
  run and then decayed linearly to 0. Images are scaled to [-1, 1] (Tanh).
* VAE (Kingma & Welling 2014): images in [0, 1] as Bernoulli means; the loss per digit
  is the negative ELBO, the pixel-wise binary cross-entropy of the decoder's logits plus
  KL(q(z|x) || N(0, I)), which ``Reparameterize`` adds in its backward pass; Adam 1e-3.

Both run on the one :class:`~volnet.train.trainer.Trainer`, with :class:`GanStep` or
:class:`VaeStep` as its step (the GAN's two Adams are one
:class:`~volnet.train.optim_group.OptimizerGroup`, its decay a
:class:`~volnet.train.schedule.LinearDecay`), and save a resumable checkpoint after
every epoch (the GAN as one ``Sequential(generator, discriminator)``, whose forward
D(G(z)) is what the generator is trained through) and, with ``samples``, a PNG grid
from a fixed noise batch. Ctrl-C stops after the current batch and saves.
"""

from __future__ import annotations

import os
import shlex
import time

import numpy as np

from volnet.data.batches import BatchIterator
from volnet.data.registry import load_dataset
from volnet.errors import CheckpointError, ConfigError
from volnet.layers import Sequential
from volnet.train.callbacks import ModelCheckpoint
from volnet.train.images import grid, write_png
from volnet.train.interrupt import stop_on_interrupt
from volnet.train.optim import Adam
from volnet.train.optim_group import OptimizerGroup

# Adam settings; "decay": lr constant for the first half of the run, then linearly to 0
# (the schedule of Zhu et al. 2017's CycleGAN), which sharpens the GAN's digits
# "real_label": the discriminator's target for real digits, 0.9 (one-sided label smoothing,
# Salimans et al. 2016): a less confident D keeps the generator's gradient informative
KINDS = {"dcgan": {"lr": 2e-4, "betas": (0.5, 0.999), "decay": True, "real_label": 0.9},
         "vae": {"lr": 1e-3, "betas": (0.9, 0.999), "decay": False}}
LATENT = {"dcgan": 100, "vae": 16}
DEFAULTS = {"dcgan": {"epochs": 11, "batch_size": 12},    # the measured recipes (README)
            "vae": {"epochs": 6, "batch_size": 64}}


def bce_with_logits(logits: np.ndarray, target) -> tuple[np.ndarray, np.ndarray]:
    """Per-element -[y log s(l) + (1 - y) log(1 - s(l))] and its gradient s(l) - y, stably."""
    loss = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    return loss, 1.0 / (1.0 + np.exp(-logits)) - target


def build(kind: str, seed: int = 0):
    """The network a run trains: the GAN pair as one Sequential, or the VAE."""
    from volnet.models.generative import conv_vae, dcgan_discriminator, dcgan_generator

    if kind == "dcgan":
        return Sequential({"generator": dcgan_generator(seed=seed),
                           "discriminator": dcgan_discriminator(seed=seed + 1)})
    if kind == "vae":
        return conv_vae(seed=seed)
    raise ConfigError(f"unknown generative model {kind!r}; choose dcgan or vae")


def kind_of(net) -> str:
    """"dcgan" or "vae", recognised from a loaded checkpoint's network."""
    names = [name for name, _ in net.named_children()]
    if names == ["generator", "discriminator"]:
        return "dcgan"
    if names == ["encoder", "sample", "decoder"]:
        return "vae"
    raise CheckpointError("this checkpoint holds neither a DCGAN (generator, discriminator) "
                          "nor a VAE (encoder, sample, decoder); it was not written by "
                          "volnet train dcgan/vae")


def make_optimizer(kind: str, net):
    """The recipe's optimizer: one Adam per GAN network (an OptimizerGroup), or one Adam."""
    hyper = KINDS[kind]
    if kind == "dcgan":
        return OptimizerGroup({part: Adam(lr=hyper["lr"], betas=hyper["betas"])
                               for part in ("generator", "discriminator")})
    return Adam(lr=hyper["lr"], betas=hyper["betas"])


class GanStep:
    """One discriminator and one generator update on a batch of real images in [-1, 1].

    The noise for the fakes comes from this step's generator, seeded with ``seed``
    and saved in checkpoints, so a resumed run draws what the straight run drew.
    """

    kind = "dcgan"
    metrics = ("d_loss", "g_loss")

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, trainer, real: np.ndarray, labels=None) -> dict:
        g, d = trainer.net.generator, trainer.net.discriminator
        n = len(real)
        z = self.rng.standard_normal((n, LATENT["dcgan"], 1, 1)).astype(np.float32)
        fake = g.forward(z, training=True)
        real_label = KINDS["dcgan"]["real_label"]              # one-sided smoothing; fakes stay 0
        loss_real, dl = bce_with_logits(d.forward(real, training=True), real_label)
        d.backward((dl / n).astype(np.float32), input_grad=False)
        loss_fake, dl = bce_with_logits(d.forward(fake, training=True), 0.0)
        # D's loss is the sum of both terms: the fakes' gradients add to the reals'
        d.backward((dl / n).astype(np.float32), input_grad=False, accumulate=True)
        d_loss = float(loss_real.mean() + loss_fake.mean())
        trainer.check_loss(d_loss)
        trainer.apply_gradients("discriminator")
        loss_g, dl = bce_with_logits(d.forward(fake, training=True), 1.0)   # non-saturating loss
        g.backward(d.backward((dl / n).astype(np.float32)), input_grad=False)
        trainer.apply_gradients("generator")
        return {"d_loss": d_loss, "g_loss": float(loss_g.mean())}

    def validate(self, trainer, val) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"kind": self.kind, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise CheckpointError(f"the checkpoint was written by volnet train "
                                  f"{state.get('kind')}, not {self.kind}")
        self.rng.bit_generator.state = state["rng"]


class VaeStep:
    """One update on the negative ELBO of a batch of images in [0, 1] (the noise of the
    reparameterisation is the ``Reparameterize`` layer's, checkpointed with the layers)."""

    kind = "vae"
    metrics = ("loss", "recon", "kl")

    def __call__(self, trainer, x: np.ndarray, labels=None) -> dict:
        vae, n = trainer.net, len(x)
        vae.sample.kl_weight = 1.0 / n
        rec, dlogits = bce_with_logits(vae.forward(x, training=True), x)
        rec = float(rec.sum() / n)
        kl = float(vae.sample.kl.mean())
        trainer.check_loss(rec + kl, x)
        vae.backward((dlogits / n).astype(np.float32), input_grad=False)
        trainer.apply_gradients()
        return {"loss": rec + kl, "recon": rec, "kl": kl}

    def validate(self, trainer, val) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise CheckpointError(f"the checkpoint was written by volnet train "
                                  f"{state.get('kind')}, not {self.kind}")


def make_trainer(kind: str, net, seed: int, total_steps: int, **options):
    """The Trainer a run uses: the kind's step, optimizer and (GAN) learning-rate decay."""
    from volnet.train.schedule import LinearDecay
    from volnet.train.trainer import Trainer

    opt = make_optimizer(kind, net)
    schedule = LinearDecay(opt, total_steps) if KINDS[kind]["decay"] else None
    step = GanStep(seed) if kind == "dcgan" else VaeStep()
    metadata = {"preprocessing": {"input_shape": [1, 28, 28], "generative": kind,
                                  "latent": LATENT[kind]}}
    return Trainer(net, opt, train_step=step, schedule=schedule, metadata=metadata, **options)


def _scaled(images: np.ndarray, kind: str) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return x * 2.0 - 1.0 if kind == "dcgan" else x


def train_generative(kind: str, data: str = "mnist-sample", *, epochs: int | None = None,
                     batch_size: int | None = None,
                     seed: int | None = None, out: str | None = None, resume: str | None = None,
                     overwrite: bool = False, samples: str | None = None, progress: bool = True,
                     limit: int | None = None, log=print) -> dict:
    """Train a DCGAN or a VAE on 28x28 digits; checkpoint every epoch; sample grids with ``samples``.

    Args:
        kind: "dcgan" or "vae".
        data: dataset name or folder with 28x28 grey images (labels are ignored).
        out: checkpoint path; default ``<kind>-<data>-<time>.safetensors``; an existing
            file is refused unless ``overwrite`` or it is ``resume``.
        resume: continue an interrupted or finished run for more ``epochs`` (total).
        samples: folder for ``epoch-<k>.png``: 64 digits from a fixed noise batch.
        limit: use only the first ``limit`` training images (tests, quick looks).

    Returns:
        {"path", "history", "seconds", "epochs", "interrupted"} (Ctrl-C before ``epochs``).
    """
    from volnet.io.checkpoint import resume as resume_from
    from volnet.io.checkpoint import save
    from volnet.train.recipe import default_out_path

    if kind not in KINDS:
        raise ConfigError(f"unknown generative model {kind!r}; choose dcgan or vae")
    if resume:   # options not given are the run's own: its batch, seed, images, planned length
        epochs, batch_size, seed, limit = _resumed_run(resume, epochs, batch_size, seed, limit)
    seed = 0 if seed is None else seed
    epochs = DEFAULTS[kind]["epochs"] if epochs is None else epochs
    batch_size = DEFAULTS[kind]["batch_size"] if batch_size is None else batch_size
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch size must be >= 1, got {epochs} and {batch_size}")
    data_set = load_dataset(data)
    if data_set.input_shape != (1, 28, 28):
        raise ConfigError(f"{kind} is sized for 28x28 grey digits; {data_set.name} has images of "
                          f"shape {data_set.input_shape}")
    out = out or resume or default_out_path(kind, data)
    if os.path.exists(out) and not overwrite and out != resume:
        raise CheckpointError(f"{out} already exists; pass another --out, --overwrite, or "
                              f"--resume {out} to continue that run")
    x_train = _scaled(data_set.x_train[:limit], kind)
    batches = BatchIterator(x_train, data_set.y_train[:limit], batch_size, seed=seed,
                            drop_last=True)
    if len(batches) < 1:
        raise ConfigError(f"batch size {batch_size} is larger than the {len(x_train)} training images")
    net = build(kind, seed)
    fixed_z = np.random.default_rng(seed + 1000).standard_normal((64, LATENT[kind], 1, 1))
    callbacks = [ModelCheckpoint(out), _EpochReport(kind, fixed_z.astype(np.float32), samples, log)]
    trainer = make_trainer(kind, net, seed, epochs * len(batches), callbacks=callbacks,
                           progress=progress, log_epochs=False)
    if resume:
        resume_from(trainer, resume)
        log(f"resumed {resume} after epoch {trainer.epoch}, step {trainer.step}")
    log(f"training {kind} ({net.num_params():,} parameters) on {data_set.name}: "
        f"{len(x_train):,} images, batch {batch_size}, {epochs} epochs; checkpoint -> {out}")
    start = time.perf_counter()
    with stop_on_interrupt(trainer):
        trainer.fit(batches, epochs)
    if trainer.stopped and trainer.epoch < epochs:
        save(out, net, trainer=trainer)
        log(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.batch}; state saved to "
            f"{out}; continue with: volnet train {kind} --data {shlex.quote(data)} --epochs "
            f"{epochs} --batch-size {batch_size} --seed {seed}"
            + (f" --limit {limit}" if limit is not None else "")
            + f" --resume {shlex.quote(out)}")
    metrics = trainer.train_step.metrics
    history = {k: v for k, v in trainer.history.items() if k in metrics}
    return {"path": out, "history": history, "seconds": time.perf_counter() - start,
            "epochs": trainer.epoch, "interrupted": trainer.stopped and trainer.epoch < epochs}


def _resumed_run(path: str, epochs, batch_size, seed, limit):
    """epochs, batch size, seed and image count of the run ``path`` holds, where not given;
    a given one that contradicts the run is refused (the resumed run must match a straight one)."""
    from volnet.io.checkpoint import load_checkpoint

    state = load_checkpoint(path).trainer_state or {}
    batches = state.get("batches") if isinstance(state.get("batches"), dict) else {}
    schedule = state.get("schedule") if isinstance(state.get("schedule"), dict) else {}
    saved = {"batch_size": batches.get("batch_size"), "seed": batches.get("seed"),
             "limit": batches.get("num_examples")}
    saved = {k: v if isinstance(v, int) and not isinstance(v, bool) else None
             for k, v in saved.items()}
    given = {"batch_size": batch_size, "seed": seed}
    for key, value in given.items():
        if value is not None and saved[key] is not None and value != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"--resume {path} continues a run trained with {flag} "
                              f"{saved[key]}; drop {flag} (the resumed run must match an "
                              "uninterrupted one)")
    batch_size = saved["batch_size"] if batch_size is None else batch_size
    seed = saved["seed"] if seed is None else seed
    limit = saved["limit"] if limit is None else limit
    total = schedule.get("total_steps")
    if epochs is None and isinstance(total, int) and batch_size and saved["limit"]:
        per_epoch = saved["limit"] // batch_size          # drop_last batches
        if per_epoch and total % per_epoch == 0:
            epochs = total // per_epoch
    return epochs, batch_size, seed, limit


class _EpochReport:
    """Trainer callback: the epoch's line through ``log`` and, with a folder, a sample grid."""

    def __init__(self, kind: str, fixed_z: np.ndarray, samples: str | None, log) -> None:
        self.kind, self.fixed_z, self.samples, self.log = kind, fixed_z, samples, log

    def on_epoch_end(self, trainer, logs: dict) -> None:
        line = ", ".join(f"{k} {logs[k]:.4f}" for k in trainer.train_step.metrics)
        if self.samples:
            os.makedirs(self.samples, exist_ok=True)
            path = os.path.join(self.samples, f"epoch-{trainer.epoch}.png")
            write_png(path, grid(decode(trainer.net, self.kind, self.fixed_z), cols=8))
            line += f"; samples -> {path}"
        self.log(f"epoch {trainer.epoch}: {line}")


def decode(net, kind: str, z: np.ndarray) -> np.ndarray:
    """Images in [0, 1] from latent codes z: the generator (Tanh, rescaled) or the VAE decoder."""
    if kind == "dcgan":
        return (net.generator.forward(z) + 1.0) / 2.0
    return 1.0 / (1.0 + np.exp(-net.decoder.forward(z)))
