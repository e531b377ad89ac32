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

Both save a resumable checkpoint after every epoch (the GAN as one
``Sequential(generator, discriminator)``, whose forward D(G(z)) is what the generator
is trained through) and, with ``samples``, a PNG grid from a fixed noise batch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import numpy as np

from volnet.data.registry import load_dataset
from volnet.errors import CheckpointError, ConfigError, TrainingDivergedError
from volnet.layers import Sequential
from volnet.train.images import grid, write_png
from volnet.train.optim import Adam

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


class _Optimizers:
    """One Adam per sub-network, seen by the checkpoint code as one optimizer."""

    def __init__(self, kind: str, net):
        hyper = KINDS[kind]
        parts = ["generator", "discriminator"] if kind == "dcgan" else [""]
        self.net, self.parts, self.kind = net, parts, kind
        self.opts = {part: Adam(lr=hyper["lr"], betas=hyper["betas"]) for part in parts}

    @property
    def state(self) -> dict:
        return {name: slots for opt in self.opts.values() for name, slots in opt.state.items()}

    def schedule(self, step: int, total: int) -> None:
        """Set the learning rate for ``step`` of ``total``: constant, then decaying (see KINDS)."""
        hyper = KINDS[self.kind]
        factor = 1.0
        if hyper["decay"] and step >= total / 2:
            factor = max(0.0, (total - step) / (total - total / 2))
        for opt in self.opts.values():
            opt.lr = hyper["lr"] * factor

    def step(self, part: str) -> None:
        named = [(n, p, g) for n, p, g in self.net.named_params(trainable_only=True)
                 if n.startswith(part)]
        for n, _, g in named:
            if not np.isfinite(g).all():
                raise TrainingDivergedError(f"gradient of {n} became NaN or infinite; lower the "
                                            "learning rate or restart from the last checkpoint")
        self.opts[part].step({n: p for n, p, _ in named}, {n: g for n, _, g in named})

    def state_dict(self) -> dict:
        states = {part: opt.state_dict() for part, opt in self.opts.items()}
        return {"type": "Adam", "hyper": json.dumps({p: s["hyper"] for p, s in states.items()}),
                "t": json.dumps({p: s["t"] for p, s in states.items()}), "state": self.state}

    def load_state_dict(self, sd: dict) -> None:
        hyper, t = json.loads(sd["hyper"]), json.loads(sd["t"])
        for part, opt in self.opts.items():
            mine = {n: s for n, s in sd["state"].items() if n.startswith(part)}
            opt.load_state_dict({"type": "Adam", "hyper": hyper[part], "t": t[part], "state": mine})


@dataclass
class _Loop:
    """What the checkpoint code reads from a trainer: optimizer, state_dict, metadata."""

    net: object
    optimizer: _Optimizers
    kind: str
    seed: int
    epoch: int = 0
    step: int = 0

    def __post_init__(self):
        self.history: dict[str, list[float]] = {}
        self.rng = np.random.default_rng(self.seed)
        self.metadata = {"preprocessing": {"input_shape": [1, 28, 28], "generative": self.kind,
                                           "latent": LATENT[self.kind]}}

    def state_dict(self) -> dict:
        rngs = {path: layer.rng.bit_generator.state
                for path, layer in self.net.named_layers() if hasattr(layer, "rng")}
        return {"kind": self.kind, "epoch": self.epoch, "step": self.step, "seed": self.seed,
                "history": self.history, "rng": self.rng.bit_generator.state, "layer_rngs": rngs,
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != self.kind:
            raise CheckpointError(f"the checkpoint was written by volnet train {state.get('kind')}, "
                                  f"not {self.kind}")
        self.epoch, self.step, self.seed = int(state["epoch"]), int(state["step"]), int(state["seed"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.rng.bit_generator.state = state["rng"]
        layers = dict(self.net.named_layers())
        for path, rng_state in state.get("layer_rngs", {}).items():
            layers[path].rng.bit_generator.state = rng_state
        self.optimizer.load_state_dict(state["optimizer"])


def gan_step(loop: _Loop, real: np.ndarray) -> dict:
    """One discriminator and one generator update on a batch of real images in [-1, 1]."""
    g, d = loop.net.generator, loop.net.discriminator
    n = len(real)
    z = loop.rng.standard_normal((n, LATENT["dcgan"], 1, 1)).astype(np.float32)
    fake = g.forward(z, training=True)
    real_label = KINDS["dcgan"]["real_label"]              # one-sided smoothing; fakes stay 0
    loss_real, dl = bce_with_logits(d.forward(real, training=True), real_label)
    d.backward((dl / n).astype(np.float32), input_grad=False)
    grads = {name: grad.copy() for name, _, grad in d.named_params()}
    loss_fake, dl = bce_with_logits(d.forward(fake, training=True), 0.0)
    d.backward((dl / n).astype(np.float32), input_grad=False)
    for name, _, grad in d.named_params():
        grad += grads[name]
    loop.optimizer.step("discriminator")
    loss_g, dl = bce_with_logits(d.forward(fake, training=True), 1.0)   # non-saturating loss
    g.backward(d.backward((dl / n).astype(np.float32)), input_grad=False)
    loop.optimizer.step("generator")
    return {"d_loss": float(loss_real.mean() + loss_fake.mean()), "g_loss": float(loss_g.mean())}


def vae_step(loop: _Loop, x: np.ndarray) -> dict:
    """One update on the negative ELBO of a batch of images in [0, 1]."""
    vae, n = loop.net, len(x)
    vae.sample.kl_weight = 1.0 / n
    rec, dlogits = bce_with_logits(vae.forward(x, training=True), x)
    vae.backward((dlogits / n).astype(np.float32), input_grad=False)
    loop.optimizer.step("")
    rec = float(rec.sum() / n)
    kl = float(vae.sample.kl.mean())
    return {"loss": rec + kl, "recon": rec, "kl": kl}


def _scaled(images: np.ndarray, kind: str) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return x * 2.0 - 1.0 if kind == "dcgan" else x


def train_generative(kind: str, data: str = "mnist-sample", *, epochs: int | None = None,
                     batch_size: int | None = None,
                     seed: int = 0, out: str | None = None, resume: str | None = None,
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
        {"path", "history", "seconds", "epochs"}.
    """
    from volnet.io.checkpoint import resume as resume_from
    from volnet.io.checkpoint import save
    from volnet.train.recipe import default_out_path

    if kind not in KINDS:
        raise ConfigError(f"unknown generative model {kind!r}; choose dcgan or vae")
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
    net = build(kind, seed)
    loop = _Loop(net, _Optimizers(kind, net), kind, seed)
    if resume:
        resume_from(loop, resume)
        log(f"resumed {resume} after epoch {loop.epoch}, step {loop.step}")
    x_train = _scaled(data_set.x_train[:limit], kind)
    fixed_z = np.random.default_rng(seed + 1000).standard_normal((64, LATENT[kind], 1, 1))
    step_fn = gan_step if kind == "dcgan" else vae_step
    batches = len(x_train) // batch_size
    if batches < 1:
        raise ConfigError(f"batch size {batch_size} is larger than the {len(x_train)} training images")
    log(f"training {kind} ({net.num_params():,} parameters) on {data_set.name}: "
        f"{len(x_train):,} images, batch {batch_size}, {epochs} epochs; checkpoint -> {out}")
    start = time.perf_counter()
    while loop.epoch < epochs:
        order = np.random.default_rng([seed, loop.epoch]).permutation(len(x_train))
        sums: dict[str, float] = {}
        bar = _bar(progress, batches, f"epoch {loop.epoch + 1}/{epochs}")
        with np.errstate(over="ignore"):
            for b in range(batches):
                loop.optimizer.schedule(loop.step, epochs * batches)
                logs = step_fn(loop, x_train[order[b * batch_size:(b + 1) * batch_size]])
                loop.step += 1
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v / (b + 1):.3f}" for k, v in sums.items()})
        if bar is not None:
            bar.close()
        loop.epoch += 1
        for key, value in sums.items():
            loop.history.setdefault(key, []).append(value / batches)
        save(out, net, trainer=loop)
        line = ", ".join(f"{k} {v / batches:.4f}" for k, v in sums.items())
        if samples:
            os.makedirs(samples, exist_ok=True)
            path = os.path.join(samples, f"epoch-{loop.epoch}.png")
            write_png(path, grid(decode(net, kind, fixed_z.astype(np.float32)), cols=8))
            line += f"; samples -> {path}"
        log(f"epoch {loop.epoch}: {line}")
    return {"path": out, "history": loop.history, "seconds": time.perf_counter() - start,
            "epochs": loop.epoch}


def decode(net, kind: str, z: np.ndarray) -> np.ndarray:
    """Images in [0, 1] from latent codes z: the generator (Tanh, rescaled) or the VAE decoder."""
    if kind == "dcgan":
        return (net.generator.forward(z) + 1.0) / 2.0
    return 1.0 / (1.0 + np.exp(-net.decoder.forward(z)))


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False)
