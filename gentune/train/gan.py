"""Training and sampling for the MLP GAN.

The loop indexes a tensor that already sits on the device with a shuffled permutation, so a step
costs a few matrix products and no Python work per sample (the tutorial's DataLoader converted
each image on its own). Losses are kept on the device and read back only every `log_every` steps,
so a GPU is never made to wait on every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ..data.base import ImageDataset
from ..device import resolve_device
from ..errors import GentuneError
from ..models.gan_mlp import Discriminator, GANConfig, Generator, build

FINAL_LOSS_WINDOW = 100  # the "final training loss" is the mean over this many last G steps
# A BCE this large needs |logit| > 1e4, i.e. weights that have blown up, though still finite.
DIVERGED_LOSS = 1e4

Callback = Callable[[int, int, dict], None]


@dataclass
class GANResult:
    """What one training run produced.

    d_loss is BCE(D(real), 1) + BCE(D(fake), 0), so it sits near 2 ln 2 = 1.386 at equilibrium;
    g_loss is the non-saturating BCE(D(G(z)), 1), near ln 2 at equilibrium.
    """

    generator: Generator  # in eval mode
    discriminator: Discriminator
    config: GANConfig
    steps: int  # G updates done
    epochs: float  # passes over the training data seen by D
    seconds: float  # wall time of the whole call, setup included
    g_loss: float  # mean over the last min(100, steps) G steps
    d_loss: float  # same window; each step's value is the mean over its d_steps D updates
    history: list[dict] = field(default_factory=list)  # {step, g_loss, d_loss}, window means
    device: str = "cpu"
    seed: int = 0
    diverged: bool = False  # a loss became NaN, inf or > DIVERGED_LOSS; training stopped there
    stop_reason: str = "budget"  # "budget", "max_seconds" or "diverged"


def make_optimizer(name: str, params, lr: float, config: GANConfig) -> torch.optim.Optimizer:
    """The optimizer `name` with the config's betas / momentum and weight decay."""
    # fused=True runs the update as one kernel: 2-4x faster on CPU for these small networks.
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(config.beta1, config.beta2),
                                weight_decay=config.weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(config.beta1, config.beta2),
                                 weight_decay=config.weight_decay, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, fused=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum,
                                   weight_decay=config.weight_decay)
    raise GentuneError(f"unknown optimizer {name!r}", fix="use adam, adamw, sgd or rmsprop")


def _budget(steps, epochs, batches_per_epoch: int, d_steps: int) -> int:
    """Total G steps for a budget given as G steps or as epochs of real data seen by D."""
    if (steps is None) == (epochs is None):
        raise GentuneError("give exactly one training budget: steps or epochs",
                           value={"steps": steps, "epochs": epochs},
                           fix="pass steps=N (G updates) or epochs=E, not both and not neither")
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise GentuneError("steps must be an integer >= 1", value=steps, fix="pass steps=1000")
        return steps
    if not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs <= 0:
        raise GentuneError("epochs must be a finite number > 0", value=epochs, fix="pass epochs=5")
    return max(1, math.ceil(epochs * batches_per_epoch / d_steps - 1e-9))


class _Batches:
    """Endless batches of a device tensor; a fresh permutation per epoch, last partial batch dropped."""

    def __init__(self, x: torch.Tensor, batch_size: int, gen: torch.Generator):
        self.x, self.batch_size, self.gen = x, batch_size, gen
        self.per_epoch = x.shape[0] // batch_size
        self.consumed = 0
        self.perm = None

    def next(self) -> torch.Tensor:
        i = self.consumed % self.per_epoch
        if i == 0:
            self.perm = torch.randperm(self.x.shape[0], generator=self.gen, device=self.x.device)
        self.consumed += 1
        return self.x[self.perm[i * self.batch_size:(i + 1) * self.batch_size]]


def _bce(out: torch.Tensor, target: torch.Tensor, logits: bool) -> torch.Tensor:
    if logits:
        return F.binary_cross_entropy_with_logits(out, target)
    return F.binary_cross_entropy(out, target)


def _build_and_optimizers(config: GANConfig, image_shape, seed: int, dev: torch.device):
    """(G, D, opt_g, opt_d), initialised under `seed` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        G, D = build(config, image_shape)
    G.to(dev).train()
    D.to(dev).train()
    opt_g = make_optimizer(config.optimizer, G.parameters(), config.lr, config)
    opt_d = make_optimizer(config.optimizer, D.parameters(), config.d_lr, config)
    return G, D, opt_g, opt_d


def _gan_step(G, D, opt_g, opt_d, batches: _Batches, gen: torch.Generator,
              config: GANConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """config.d_steps D updates, then one non-saturating G update; (g_loss, mean d_loss)."""
    bs, dev, logits = config.batch_size, batches.x.device, D.outputs_logits
    ones = torch.ones(bs, 1, device=dev)
    zeros = torch.zeros(bs, 1, device=dev)
    d_sum = 0.0
    for _ in range(config.d_steps):
        real = batches.next()
        fake = G(torch.randn(bs, config.latent_dim, generator=gen, device=dev))
        d_loss = _bce(D(real), ones, logits) + _bce(D(fake.detach()), zeros, logits)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d_sum = d_sum + d_loss.detach()

    # G learns from the last fake batch; D's weights need no gradient for it.
    D.requires_grad_(False)
    g_loss = _bce(D(fake), ones, logits)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    D.requires_grad_(True)
    return g_loss.detach(), d_sum / config.d_steps


def _exploded(losses: torch.Tensor) -> bool:
    return not bool((losses.abs() <= DIVERGED_LOSS).all())  # NaN fails the comparison too


def train_gan(config: GANConfig, data: ImageDataset, *, steps: int | None = None,
              epochs: float | None = None, seed: int = 0, device: str = "cpu",
              log_every: int = 50, callback: Callback | None = None,
              max_seconds: float | None = None) -> GANResult:
    """Train the MLP GAN on `data.train` for `steps` G updates or `epochs` passes of D.

    Each G step does `config.d_steps` D updates (one real batch each) and one G update with the
    non-saturating loss. Every `log_every` steps the mean losses since the last log go to
    `history` and to `callback(step, total_steps, {"g_loss", "d_loss"})`, which may raise (e.g.
    optuna.TrialPruned) to stop; the exception propagates. `history` also gets the last step.
    A NaN, inf or exploded (> 1e4) loss stops training with `diverged=True`.
    The same seed, config and thread count give identical weights.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if not isinstance(log_every, int) or log_every < 1:
        raise GentuneError("log_every must be an integer >= 1", value=log_every, fix="pass 50")
    x = data.train.x.to(dev, torch.float32)
    if x.shape[0] < config.batch_size:
        raise GentuneError(f"batch_size is larger than the {x.shape[0]} training images",
                           value=config.batch_size, fix=f"use batch_size <= {x.shape[0]}")
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = _Batches(x, config.batch_size, gen)
    total = _budget(steps, epochs, batches.per_epoch, config.d_steps)
    G, D, opt_g, opt_d = _build_and_optimizers(config, data.shape, seed, dev)
    losses = torch.zeros(total, 2, device=dev)  # per G step: g_loss, d_loss; read back rarely
    history: list[dict] = []
    stop_reason, step, logged = "budget", 0, 0

    for step in range(1, total + 1):
        losses[step - 1] = torch.stack(_gan_step(G, D, opt_g, opt_d, batches, gen, config))
        if max_seconds is not None and step < total and time.perf_counter() - t0 > max_seconds:
            stop_reason = "max_seconds"
        if step % log_every and step != total and stop_reason == "budget":
            continue
        if _exploded(losses[logged:step]):
            stop_reason = "diverged"
        g, d = losses[logged:step].mean(0).tolist()
        history.append({"step": step, "g_loss": g, "d_loss": d})
        logged = step
        if stop_reason != "budget":
            break
        if callback is not None and step % log_every == 0:
            callback(step, total, {"g_loss": g, "d_loss": d})

    final = losses[max(0, step - FINAL_LOSS_WINDOW):step].mean(0).tolist()
    G.eval()
    return GANResult(generator=G, discriminator=D, config=config, steps=step,
                     epochs=batches.consumed / batches.per_epoch,
                     seconds=time.perf_counter() - t0, g_loss=final[0], d_loss=final[1],
                     history=history, device=str(dev), seed=seed,
                     diverged=stop_reason == "diverged", stop_reason=stop_reason)


def sample(generator: Generator, n: int, *, seed: int = 0, device: str = "cpu",
           batch_size: int = 4096) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU; the same seed gives the same latent vectors.

    The generator is moved to `device` (and stays there); its train/eval mode is restored.
    """
    if not isinstance(n, int) or n < 0:
        raise GentuneError("the number of samples must be an integer >= 0", value=n, fix="pass 1000")
    dev = resolve_device(device)
    # Latents are drawn on the CPU in one call, so they do not depend on device or batch size.
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.to(dev).eval()
    try:
        with torch.inference_mode():
            out = [generator(zb.to(dev)).cpu() for zb in z.split(max(1, batch_size))]
    finally:
        generator.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *generator.image_shape)
