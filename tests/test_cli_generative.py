"""`volnet train dcgan|vae` and `volnet generate` on a few steps of the bundled digits; one
GAN step and one VAE step against the same step written in PyTorch."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

import volnet as vn
from volnet.cli import main
from volnet.train import generative as gen


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Bit-for-bit comparisons need the same thread count in both runs: Trainer.fit would
    otherwise use however many cores the other processes leave idle at that moment."""
    monkeypatch.setenv("VOLNET_THREADS", "1")


def _train(tmp_path, kind, epochs, name="run.safetensors", **kwargs):
    return gen.train_generative(kind, epochs=epochs, batch_size=32, limit=96, progress=False,
                                out=str(tmp_path / name), log=lambda *a: None, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two epochs of each kind through the CLI (3 steps per epoch), with sample grids."""
    folder = tmp_path_factory.mktemp("gen")
    for kind in ("dcgan", "vae"):
        assert main(["train", kind, "--epochs", "2", "--batch-size", "32", "--limit", "96", "--quiet",
                     "--out", str(folder / f"{kind}.safetensors"),
                     "--samples", str(folder / f"{kind}-samples")]) == 0
    return folder


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_train_writes_checkpoint_history_and_grids(runs, kind):
    net = vn.load(runs / f"{kind}.safetensors")
    assert gen.kind_of(net) == kind
    for epoch in (1, 2):
        image = np.asarray(Image.open(runs / f"{kind}-samples" / f"epoch-{epoch}.png"))
        assert image.shape == (8 * 30 + 2, 8 * 30 + 2) and image.dtype == np.uint8


def _interrupt_after_first_epoch(line):
    if line.startswith("epoch 1:"):
        raise KeyboardInterrupt          # Ctrl-C once the first epoch's checkpoint is written


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_interrupted_run_resumes_bit_for_bit(tmp_path, kind):
    straight = _train(tmp_path, kind, 2, "a.safetensors")
    with pytest.raises(KeyboardInterrupt):
        gen.train_generative(kind, epochs=2, batch_size=32, limit=96, progress=False,
                             out=str(tmp_path / "b.safetensors"), log=_interrupt_after_first_epoch)
    resumed = _train(tmp_path, kind, 2, "b.safetensors", resume=str(tmp_path / "b.safetensors"))
    assert resumed["history"] == straight["history"]
    a, b = vn.load(straight["path"]).state_dict(), vn.load(resumed["path"]).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_existing_checkpoint_is_not_overwritten(runs, capsys):
    path = runs / "dcgan.safetensors"
    before = path.read_bytes()
    assert main(["train", "dcgan", "--epochs", "1", "--limit", "64", "--quiet", "--out", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err and path.read_bytes() == before


def test_zoo_names_of_generative_models_point_to_their_command(capsys):
    assert main(["train", "conv_vae", "--epochs", "1", "--quiet"]) == 2
    assert "train it with `volnet train vae`" in capsys.readouterr().err


def test_generate_grid_and_array(runs, tmp_path, capsys):
    out, npy = tmp_path / "grid.png", tmp_path / "s.npy"
    assert main(["generate", str(runs / "dcgan.safetensors"), "--n", "5", "--out", str(out),
                 "--npy", str(npy)]) == 0
    images = np.load(npy, allow_pickle=False)
    assert images.shape == (5, 1, 28, 28) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert np.asarray(Image.open(out)).shape == (2 + 2 * 30, 2 + 3 * 30)     # 3 columns, 2 rows
    assert main(["generate", str(runs / "dcgan.safetensors"), "--n", "5", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_reconstruct_needs_a_vae_and_writes_pairs(runs, tmp_path, capsys):
    out = tmp_path / "rec.png"
    assert main(["generate", str(runs / "dcgan.safetensors"), "--reconstruct", "--n", "8",
                 "--out", str(out)]) == 2
    assert "needs a VAE checkpoint" in capsys.readouterr().err
    assert main(["generate", str(runs / "vae.safetensors"), "--reconstruct", "--n", "8", "--out", str(out),
                 "--npy", str(tmp_path / "r.npy")]) == 0
    assert np.asarray(Image.open(out)).shape == (2 + 2 * 30, 2 + 8 * 30)   # originals above reconstructions
    assert np.load(tmp_path / "r.npy").shape == (8, 1, 28, 28)


def _torch_pair():
    t = torch.nn
    g = t.Sequential(OrderedDict([
        ("0", t.ConvTranspose2d(100, 64, 7, bias=False)), ("1", t.BatchNorm2d(64)), ("2", t.ReLU()),
        ("3", t.ConvTranspose2d(64, 32, 4, 2, 1, bias=False)), ("4", t.BatchNorm2d(32)), ("5", t.ReLU()),
        ("6", t.ConvTranspose2d(32, 1, 4, 2, 1)), ("7", t.Tanh())]))
    d = t.Sequential(OrderedDict([
        ("0", t.Conv2d(1, 32, 4, 2, 1)), ("1", t.LeakyReLU(0.2)), ("2", t.Conv2d(32, 64, 4, 2, 1, bias=False)),
        ("3", t.BatchNorm2d(64)), ("4", t.LeakyReLU(0.2)), ("5", t.Conv2d(64, 1, 7)), ("6", t.Flatten())]))
    return t.ModuleDict({"generator": g, "discriminator": d})


def test_gan_step_matches_pytorch_dcgan_step():
    net = gen.build("dcgan", seed=3)
    trainer = gen.make_trainer("dcgan", net, seed=4, total_steps=10, progress=False)
    ref = _torch_pair()
    ref.load_state_dict({k: torch.tensor(v) for k, v in net.state_dict().items()})
    real = np.random.default_rng(5).uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    z = np.random.default_rng(4).standard_normal((8, 100, 1, 1)).astype(np.float32)   # the step's draw
    trainer.train_step(trainer, real, None)

    g, d = ref["generator"], ref["discriminator"]
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    fake = g(torch.tensor(z))
    out_real = d(torch.tensor(real))
    err_d = bce(out_real, torch.full_like(out_real, 0.9))   # one-sided label smoothing
    out_fake = d(fake.detach())
    err_d = err_d + bce(out_fake, torch.zeros_like(out_fake))
    opt_d.zero_grad()
    err_d.backward()
    opt_d.step()
    out = d(fake)
    err_g = bce(out, torch.ones_like(out))
    opt_g.zero_grad()
    err_g.backward()
    opt_g.step()
    _same_after_adam(net, ref, lr=2e-4)


def _same_after_adam(net, ref, lr):
    """Adam's first step moves each weight by about lr * sign(gradient), so float32 noise in a
    near-zero gradient can move a weight by a fraction of lr: tolerate 1/4 of lr there, and
    ask 99% of the weights to agree to 1e-6."""
    ours = net.state_dict()
    for key, value in ref.state_dict().items():
        np.testing.assert_allclose(ours[key], value.numpy(), rtol=1e-4, atol=lr / 4, err_msg=key)
        assert np.mean(np.abs(ours[key] - value.numpy()) <= 1e-6 + 1e-4 * np.abs(ours[key])) > 0.99, key


def test_vae_loss_and_step_match_pytorch():
    net = gen.build("vae", seed=1)
    trainer = gen.make_trainer("vae", net, seed=2, total_steps=10, progress=False)
    x = np.random.default_rng(6).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    before = {k: torch.tensor(v) for k, v in net.state_dict().items()}
    drawn = []          # the noise this step draws (the cache is released by backward)
    with net.sample.register_forward_hook(lambda layer, *_: drawn.append(layer._cache[3].copy())):
        logs = trainer.train_step(trainer, x, None)
    eps = torch.tensor(drawn[0])
    t = torch.nn
    enc = t.Sequential(t.Conv2d(1, 32, 4, 2, 1), t.ReLU(), t.Conv2d(32, 64, 4, 2, 1), t.ReLU(), t.Conv2d(64, 32, 7))
    dec = t.Sequential(t.ConvTranspose2d(16, 64, 7), t.ReLU(), t.ConvTranspose2d(64, 32, 4, 2, 1), t.ReLU(),
                       t.ConvTranspose2d(32, 1, 4, 2, 1))
    ref = t.ModuleDict({"encoder": enc, "decoder": dec})
    ref.load_state_dict(before)
    h = enc(torch.tensor(x))
    mu, logvar = h[:, :16], h[:, 16:]
    logits = dec(mu + torch.exp(0.5 * logvar) * eps)
    xt = torch.tensor(x)
    rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, xt, reduction="sum") / 4
    kl = 0.5 * (mu ** 2 + logvar.exp() - logvar - 1).sum() / 4
    assert logs["recon"] == pytest.approx(rec.item(), rel=1e-5)
    assert logs["kl"] == pytest.approx(kl.item(), rel=1e-4)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    (rec + kl).backward()
    opt.step()
    _same_after_adam(net, ref, lr=1e-3)


def test_gan_learning_rate_is_held_then_decays_linearly_to_zero():
    trainer = gen.make_trainer("dcgan", gen.build("dcgan"), seed=0, total_steps=100,
                               progress=False)
    group, schedule = trainer.optimizer, trainer.schedule
    lrs, done = [], 0
    for step in (0, 49, 50, 75, 99):      # the rate used by update `step` (counting from 0)
        while done < step:
            schedule.step()
            done += 1
        lrs.append([opt.lr for opt in group.members.values()])
    assert lrs == [[2e-4] * 2, [2e-4] * 2, [2e-4] * 2, [1e-4] * 2, [pytest.approx(4e-6)] * 2]
    assert gen.make_trainer("vae", gen.build("vae"), 0, 100).schedule is None   # the VAE keeps its rate


def test_gan_checkpoint_holds_both_optimizers_as_one_group(runs):
    """The two Adams are saved as one OptimizerGroup: each its own step count and moments."""
    state = vn.io.checkpoint.load_checkpoint(runs / "dcgan.safetensors").trainer_state
    opt = state["optimizer"]
    assert opt["type"] == "OptimizerGroup"
    assert opt["members"] == {"generator": "Adam", "discriminator": "Adam"}
    assert opt["t"] == {"generator": 6, "discriminator": 6}           # 2 epochs x 3 steps
    assert opt["hyper"]["generator"]["betas"] == [0.5, 0.999]
    assert {n.split(".")[0] for n in opt["state"]} == {"generator", "discriminator"}
    assert state["schedule"]["epoch"] == 6 and state["train_step"]["kind"] == "dcgan"


def test_gan_interrupted_mid_epoch_resumes_bit_for_bit(tmp_path):
    """Ctrl-C inside epoch 2 saves the state (noise generator, schedule, both Adams) and a
    resumed run ends where the straight one does."""
    import os
    import signal

    from volnet.train.trainer import Trainer

    straight = _train(tmp_path, "dcgan", 2, "a.safetensors")
    real_step = Trainer._train_step

    def step_then_interrupt(self, xb, yb):
        result = real_step(self, xb, yb)
        if self.step == 4:                        # epoch 2, batch 1 of 3
            os.kill(os.getpid(), signal.SIGINT)
        return result

    Trainer._train_step = step_then_interrupt
    try:
        assert _train(tmp_path, "dcgan", 2, "b.safetensors")["interrupted"]
    finally:
        Trainer._train_step = real_step
    state = vn.io.checkpoint.load_checkpoint(tmp_path / "b.safetensors").trainer_state
    assert (state["epoch"], state["batch"], state["step"]) == (1, 1, 4)
    resumed = _train(tmp_path, "dcgan", 2, "b.safetensors", resume=str(tmp_path / "b.safetensors"))
    assert resumed["history"] == straight["history"]
    a, b = vn.load(straight["path"]).state_dict(), vn.load(resumed["path"]).state_dict()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
