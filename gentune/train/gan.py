"""Training and sampling for the GANs (the MLP GAN and the DCGAN), on the one loop.

The step indexes a tensor that already sits on the device with a shuffled permutation, so it
costs a few matrix products and no Python work per sample (the tutorial's DataLoader converted
each image on its own). Next to the losses it records D's accuracy and the largest gradient norm
of the step, which the failure detectors read (gentune.trial.detectors).

The losses are pure functions of (parameters, buffers, batch), evaluated with
`torch.func.functional_call` (`GANLosses`): a population trainer passes K members' parameters
stacked by `torch.func.stack_module_state` and maps the same functions over them with
`torch.func.vmap`. One model runs the same losses on its modules as they are (`ModuleLosses`),
which gives the same numbers without functional_call's swap of every parameter at every call
(a fifth of a small model's step), and steps the usual torch optimizers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from gentune.data.base import ImageDataset
from gentune.device import resolve_device
from gentune.models.gan_mlp import Generator, build
from gentune.train.callback import Callback
from gentune.train.loop import Batches, Loop, TrainResult, check_budget, decode_latents, fit, fixed_subset
from gentune.train.optim import optimizer

# A BCE this large needs |logit| > 1e4, i.e. weights that have blown up, though still finite.
DIVERGED_LOSS = 1e4
# Columns of the per-step record; each log reports their means, except grad_norm: its maximum.
SIGNALS = ("g_loss", "d_loss", "d_acc", "grad_norm")
CURVE_N = 512  # real images in each fixed slice D's train / validation losses are measured on
LOG_EVERY = 50

Tensors = dict[str, torch.Tensor]
Builder = Callable[..., tuple[nn.Module, nn.Module]]


class GANResult(TrainResult):
    """A TrainResult with the GAN's own names.

    losses["d"] is BCE(D(real), 1) + BCE(D(fake), 0), near 2 ln 2 = 1.386 at equilibrium;
    losses["g"] is the non-saturating BCE(D(G(z)), 1), near ln 2 at equilibrium. `steps` counts
    G updates and `epochs` passes over the training data seen by D.
    """

    @property
    def generator(self) -> nn.Module:
        return self.model

    @property
    def discriminator(self) -> nn.Module:
        return self.extras["discriminator"]

    @property
    def g_loss(self) -> float:
        """Mean over the last min(100, steps) G steps."""
        return self.losses["g"]

    @property
    def d_loss(self) -> float:
        """Same window; each step's value is the mean over its d_steps D updates."""
        return self.losses["d"]


def _bce(out: torch.Tensor, target: torch.Tensor, logits: bool) -> torch.Tensor:
    if logits:
        return F.binary_cross_entropy_with_logits(out, target)
    return F.binary_cross_entropy(out, target)


@dataclass(frozen=True)
class GANLosses:
    """The GAN's losses as pure functions of (parameters, buffers, batch).

    `G` and `D` give only the structure that `functional_call` runs; the weights are the
    arguments. No hyperparameter of the GANs enters their losses (lr, betas and weight decay
    act through the optimizer; widths through the structure), so none is an argument here.
    Buffers (batch-norm statistics, spectral-norm vectors) are updated in place in train mode,
    as the modules themselves do.
    """

    G: nn.Module
    D: nn.Module

    @property
    def logits(self) -> bool:
        """Whether D ends in logits (else in probabilities: the tutorial's literal head)."""
        return bool(self.D.outputs_logits)

    def generate(self, params_g: Tensors, buffers_g: Tensors, z: torch.Tensor) -> torch.Tensor:
        return functional_call(self.G, (params_g, buffers_g), (z,), tie_weights=False)

    def _d(self, params_d: Tensors, buffers_d: Tensors, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.D, (params_d, buffers_d), (x,), tie_weights=False)

    def d_loss(
        self, params_d: Tensors, buffers_d: Tensors, real: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(D's loss, D's accuracy): BCE(D(real), 1) + BCE(D(fake), 0), and the mean share of
        real called real and fake called fake. Pass `fake` detached to keep G out of it."""
        logits = self.logits
        out_real, out_fake = self._d(params_d, buffers_d, real), self._d(params_d, buffers_d, fake)
        loss = _bce(out_real, torch.ones_like(out_real), logits) + _bce(
            out_fake, torch.zeros_like(out_fake), logits
        )
        threshold = 0.0 if logits else 0.5  # a logit of 0 is a probability of 0.5
        acc = (
            (out_real.detach() > threshold).float().mean() + (out_fake.detach() < threshold).float().mean()
        ) / 2
        return loss, acc

    def g_loss(self, params_d: Tensors, buffers_d: Tensors, fake: torch.Tensor) -> torch.Tensor:
        """The non-saturating BCE(D(fake), 1). Pass D's parameters detached: G's step needs
        no gradient for them."""
        out = self._d(params_d, buffers_d, fake)
        return _bce(out, torch.ones_like(out), self.logits)


@dataclass(frozen=True)
class ModuleLosses(GANLosses):
    """GANLosses for one model whose parameters are its modules' own: the modules are called
    directly (the parameter arguments are those same tensors, so they are not passed again)."""

    def generate(self, params_g: Tensors, buffers_g: Tensors, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def _d(self, params_d: Tensors, buffers_d: Tensors, x: torch.Tensor) -> torch.Tensor:
        return self.D(x)


def _grad_norm(params: Tensors) -> torch.Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in params.values() if p.grad is not None])


@dataclass
class _Step:
    """One G step of one model: config.d_steps D updates, then one non-saturating G update.

    Returns the step's SIGNALS as one device tensor: g_loss, mean d_loss, D's mean accuracy and
    the largest gradient norm of G's and D's updates.
    """

    losses: GANLosses
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    batches: Batches
    gen: torch.Generator
    batch_size: int
    latent_dim: int
    d_steps: int

    def __post_init__(self):
        G, D = self.losses.G, self.losses.D
        # The modules' own tensors: the optimizers update them in place, so these stay current.
        self.params_g: Tensors = dict(G.named_parameters())
        self.leaves_g = list(self.params_g.values())
        self.buffers_g: Tensors = dict(G.named_buffers())
        self.params_d: Tensors = dict(D.named_parameters())
        self.buffers_d: Tensors = dict(D.named_buffers())

    def __call__(self, i: int) -> torch.Tensor:
        f, dev = self.losses, self.batches.x.device
        # Zeros, so that the first sum and maximum give the first values exactly.
        d_sum = d_acc = grad_max = torch.zeros((), device=dev)
        for _ in range(self.d_steps):
            real = self.batches.next()
            z = torch.randn(self.batch_size, self.latent_dim, generator=self.gen, device=dev)
            fake = f.generate(self.params_g, self.buffers_g, z)
            d_loss, acc = f.d_loss(self.params_d, self.buffers_d, real, fake.detach())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            grad_max = torch.maximum(grad_max, _grad_norm(self.params_d))
            self.opt_d.step()
            d_sum = d_sum + d_loss.detach()
            d_acc = d_acc + acc

        # G learns from the last fake batch; D's weights get no gradient (detached for
        # functional_call; for modules called directly, backward stops at G's parameters).
        frozen_d = {k: v.detach() for k, v in self.params_d.items()}
        g_loss = f.g_loss(frozen_d, self.buffers_d, fake)
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward(inputs=self.leaves_g)
        grad_max = torch.maximum(grad_max, _grad_norm(self.params_g))
        self.opt_g.step()
        return torch.stack([g_loss.detach(), d_sum / self.d_steps, d_acc / self.d_steps, grad_max])


@torch.no_grad()
def _d_curve(G, D, train: torch.Tensor, val: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """D's loss on fixed train images and on fixed validation images, against the same fakes."""
    modes = G.training, D.training
    G.eval()  # no batch-norm statistics or spectral-norm iterations move here
    D.eval()
    logits = D.outputs_logits
    fake_term = _bce(D(G(z)), torch.zeros(len(z), 1, device=z.device), logits)
    out = [
        float(_bce(D(x), torch.ones(len(x), 1, device=x.device), logits) + fake_term) for x in (train, val)
    ]
    G.train(modes[0])
    D.train(modes[1])
    return out[0], out[1]


def gan_loop(
    config,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    builder: Builder = build,
) -> Loop:
    """The GAN's training run for the one loop: `steps` G updates, or `epochs` passes of D.

    `builder(config, image_shape)` makes the (G, D) pair: the MLP by default, the DCGAN's
    convolutional pair for that family. G and D are initialised under `seed` without touching
    the global RNG state. Logs every 50 steps; a NaN, inf or exploded (> 1e4) g_loss or d_loss
    stops training.
    """
    dev = resolve_device(device)
    x = data.train.x.to(dev, torch.float32)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = Batches(x, config.batch_size, gen)
    total = check_budget(steps, epochs, batches.per_epoch, batches_per_step=config.d_steps)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        G, D = builder(config, data.shape)
    G.to(dev).train()
    D.to(dev).train()
    step = _Step(
        ModuleLosses(G, D),
        optimizer(config.optimizer, G.parameters(), config.lr, config),
        optimizer(config.optimizer, D.parameters(), config.d_lr, config),
        batches,
        gen,
        config.batch_size,
        config.latent_dim,
        config.d_steps,
    )
    slices = (
        fixed_subset(x, CURVE_N, 1),
        fixed_subset(data.val.x.to(dev, torch.float32), CURVE_N, 2),
        torch.randn(CURVE_N, config.latent_dim, generator=torch.Generator().manual_seed(3)).to(dev),
    )
    return Loop(
        step,
        lambda: _d_curve(G, D, *slices),
        SIGNALS,
        G,
        total,
        LOG_EVERY,
        reduce={"grad_norm": "max"},
        diverge_on=("g_loss", "d_loss"),
        diverge_limit=DIVERGED_LOSS,
        losses={"g": "g_loss", "d": "d_loss"},
        epochs=lambda: batches.consumed / batches.per_epoch,
        config=config,
        seed=seed,
        device=str(dev),
        extras={"discriminator": D},
        result=GANResult,
    )


def train_gan(
    config,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    log_every: int = LOG_EVERY,
    callback: Callback | None = None,
    max_seconds: float | None = None,
    builder: Builder = build,
) -> GANResult:
    """Train a GAN on `data.train` for `steps` G updates or `epochs` passes of D.

    Each G step does `config.d_steps` D updates (one real batch each) and one G update with the
    non-saturating loss. Every `log_every` steps the signals since the last log (mean g_loss,
    d_loss and d_acc, largest grad_norm) go to `history` and to
    `callback(step, total_steps, signals, generator)` (a three-argument callback gets no
    generator; see gentune.train.callback). The callback may raise (e.g. optuna.TrialPruned)
    to stop; the exception propagates. `history` also gets the last step.
    The same seed, config and thread count give identical weights.
    """
    t0 = time.perf_counter()
    loop = gan_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device, builder=builder)
    return cast(GANResult, fit(loop, callback=callback, max_seconds=max_seconds, log_every=log_every, t0=t0))


def sample(
    generator: Generator, n: int, *, seed: int = 0, device: str = "cpu", batch_size: int = 4096
) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU; the same seed gives the same latent vectors.

    The generator is moved to `device` (and stays there); its train/eval mode is restored.
    """
    return decode_latents(
        generator, n, generator.latent_dim, generator, seed=seed, device=device, batch_size=batch_size
    )
