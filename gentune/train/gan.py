"""Training and sampling for the MLP GAN.

The loop indexes a tensor that already sits on the device with a shuffled permutation, so a step
costs a few matrix products and no Python work per sample (the tutorial's DataLoader converted
each image on its own). Losses are kept on the device and read back only every `log_every` steps,
so a GPU is never made to wait on every step. Next to the losses the loop records D's accuracy
and the largest gradient norm of the step, which the failure detectors read (gentune.trial.detectors).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gentune.data.base import ImageDataset
from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.models.gan_mlp import Discriminator, GANConfig, Generator, build
from gentune.train.callback import Callback, adapt
from gentune.train.loop import Batches, decode_latents
from gentune.train.optim import optimizer

FINAL_LOSS_WINDOW = 100  # the "final training loss" is the mean over this many last G steps
# A BCE this large needs |logit| > 1e4, i.e. weights that have blown up, though still finite.
DIVERGED_LOSS = 1e4
# Columns of the per-step record; each log reports their means, except grad_norm: its maximum,
# since one exploding step matters even when its neighbours are calm.
SIGNALS = ("g_loss", "d_loss", "d_acc", "grad_norm")
CURVE_N = 512  # real images in each fixed slice D's train / validation losses are measured on


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
    history: list[dict] = field(default_factory=list)  # {step, *SIGNALS}, per log window
    device: str = "cpu"
    seed: int = 0
    diverged: bool = False  # a loss became NaN, inf or > DIVERGED_LOSS; training stopped there
    stop_reason: str = "budget"  # "budget", "max_seconds" or "diverged"
    # D's loss on a fixed slice of train vs validation images (same fakes), per log step: a gap
    # that opens means D memorises the training images (gentune.train.loop.LossCurves).
    curves: list[dict] = field(default_factory=list)

    @property
    def model(self) -> Generator:
        """What Family.sample draws from (the family contract, docs/families.md)."""
        return self.generator

    @property
    def losses(self) -> dict[str, float]:
        """The final training losses: {"g": g_loss, "d": d_loss}."""
        return {"g": self.g_loss, "d": self.d_loss}


def _budget(steps, epochs, batches_per_epoch: int, d_steps: int) -> int:
    """Total G steps for a budget given as G steps or as epochs of real data seen by D."""
    if (steps is None) == (epochs is None):
        raise GentuneError(
            "give exactly one training budget: steps or epochs",
            value={"steps": steps, "epochs": epochs},
            fix="pass steps=N (G updates) or epochs=E, not both and not neither",
        )
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise GentuneError("steps must be an integer >= 1", value=steps, fix="pass steps=1000")
        return steps
    if not isinstance(epochs, (int, float)) or not math.isfinite(epochs) or epochs <= 0:
        raise GentuneError("epochs must be a finite number > 0", value=epochs, fix="pass epochs=5")
    return max(1, math.ceil(epochs * batches_per_epoch / d_steps - 1e-9))


def _bce(out: torch.Tensor, target: torch.Tensor, logits: bool) -> torch.Tensor:
    if logits:
        return F.binary_cross_entropy_with_logits(out, target)
    return F.binary_cross_entropy(out, target)


def _build_and_optimizers(config: GANConfig, image_shape, seed: int, dev: torch.device, builder=build):
    """(G, D, opt_g, opt_d), initialised under `seed` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        G, D = builder(config, image_shape)
    G.to(dev).train()
    D.to(dev).train()
    opt_g = optimizer(config.optimizer, G.parameters(), config.lr, config)
    opt_d = optimizer(config.optimizer, D.parameters(), config.d_lr, config)
    return G, D, opt_g, opt_d


def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None])


def _gan_step(G, D, opt_g, opt_d, batches: Batches, gen: torch.Generator, config: GANConfig) -> torch.Tensor:
    """config.d_steps D updates, then one non-saturating G update.

    Returns the step's SIGNALS as one device tensor: g_loss, mean d_loss, D's mean accuracy
    (real called real, fake called fake) and the largest gradient norm of G's and D's updates.
    """
    bs, dev, logits = config.batch_size, batches.x.device, D.outputs_logits
    ones = torch.ones(bs, 1, device=dev)
    zeros = torch.zeros(bs, 1, device=dev)
    threshold = 0.0 if logits else 0.5  # a logit of 0 is a probability of 0.5
    d_sum = d_acc = grad_max = 0.0
    for _ in range(config.d_steps):
        real = batches.next()
        fake = G(torch.randn(bs, config.latent_dim, generator=gen, device=dev))
        out_real, out_fake = D(real), D(fake.detach())
        d_loss = _bce(out_real, ones, logits) + _bce(out_fake, zeros, logits)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        grad_max = torch.maximum(torch.as_tensor(grad_max, device=dev), _grad_norm(D))
        opt_d.step()
        d_sum = d_sum + d_loss.detach()
        d_acc = (
            d_acc
            + (
                (out_real.detach() > threshold).float().mean()
                + (out_fake.detach() < threshold).float().mean()
            )
            / 2
        )

    # G learns from the last fake batch; D's weights need no gradient for it.
    D.requires_grad_(False)
    g_loss = _bce(D(fake), ones, logits)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    grad_max = torch.maximum(grad_max, _grad_norm(G))
    opt_g.step()
    D.requires_grad_(True)
    return torch.stack([g_loss.detach(), d_sum / config.d_steps, d_acc / config.d_steps, grad_max])


def _exploded(losses: torch.Tensor) -> bool:
    return not bool((losses.abs() <= DIVERGED_LOSS).all())  # NaN fails the comparison too


def _window(record: torch.Tensor) -> dict:
    """The SIGNALS of a log window: means, and the maximum for the gradient norm."""
    means = record.mean(0).tolist()
    out = dict(zip(SIGNALS, means))
    out["grad_norm"] = float(record[:, 3].max())
    return out


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


def train_gan(
    config: GANConfig,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    log_every: int = 50,
    callback: Callback | None = None,
    max_seconds: float | None = None,
    builder=build,
) -> GANResult:
    """Train the MLP GAN on `data.train` for `steps` G updates or `epochs` passes of D.

    Each G step does `config.d_steps` D updates (one real batch each) and one G update with the
    non-saturating loss. Every `log_every` steps the signals since the last log (mean g_loss,
    d_loss and d_acc, largest grad_norm) go to `history` and to
    `callback(step, total_steps, signals, generator)` (a three-argument callback gets no
    generator; see gentune.train.callback). The callback may raise (e.g. optuna.TrialPruned)
    to stop; the exception propagates. `history` also gets the last step.
    A NaN, inf or exploded (> 1e4) loss stops training with `diverged=True`.
    The same seed, config and thread count give identical weights. `builder(config, shape)`
    makes the (G, D) pair: the MLP by default, the DCGAN's convolutional pair for that family.
    """
    from gentune.train.loop import LossCurves, fixed_subset

    t0 = time.perf_counter()
    dev = resolve_device(device)
    if not isinstance(log_every, int) or log_every < 1:
        raise GentuneError("log_every must be an integer >= 1", value=log_every, fix="pass 50")
    x = data.train.x.to(dev, torch.float32)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = Batches(x, config.batch_size, gen)
    total = _budget(steps, epochs, batches.per_epoch, config.d_steps)
    G, D, opt_g, opt_d = _build_and_optimizers(config, data.shape, seed, dev, builder)
    curves = LossCurves()
    slices = (
        fixed_subset(x, CURVE_N, 1),
        fixed_subset(data.val.x.to(dev, torch.float32), CURVE_N, 2),
        torch.randn(CURVE_N, config.latent_dim, generator=torch.Generator().manual_seed(3)).to(dev),
    )
    record = torch.zeros(total, len(SIGNALS), device=dev)  # per G step; read back rarely
    callback = adapt(callback)
    history: list[dict] = []
    stop_reason, step, logged = "budget", 0, 0

    for step in range(1, total + 1):
        record[step - 1] = _gan_step(G, D, opt_g, opt_d, batches, gen, config)
        if max_seconds is not None and step < total and time.perf_counter() - t0 > max_seconds:
            stop_reason = "max_seconds"
        if step % log_every and step != total and stop_reason == "budget":
            continue
        if _exploded(record[logged:step, :2]):
            stop_reason = "diverged"
        signals = _window(record[logged:step])
        if stop_reason != "diverged":
            point = curves.add(step, *_d_curve(G, D, *slices))
            signals.update(train_loss=point["train"], val_loss=point["val"])
        history.append({"step": step, **signals})
        logged = step
        if stop_reason != "budget":
            break
        if callback is not None and step % log_every == 0:
            callback(step, total, signals, G)

    final = record[max(0, step - FINAL_LOSS_WINDOW) : step, :2].mean(0).tolist()
    G.eval()
    return GANResult(
        generator=G,
        discriminator=D,
        config=config,
        steps=step,
        epochs=batches.consumed / batches.per_epoch,
        seconds=time.perf_counter() - t0,
        g_loss=final[0],
        d_loss=final[1],
        history=history,
        device=str(dev),
        seed=seed,
        diverged=stop_reason == "diverged",
        stop_reason=stop_reason,
        curves=curves.points,
    )


def sample(
    generator: Generator, n: int, *, seed: int = 0, device: str = "cpu", batch_size: int = 4096
) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU; the same seed gives the same latent vectors.

    The generator is moved to `device` (and stays there); its train/eval mode is restored.
    """
    return decode_latents(
        generator, n, generator.latent_dim, generator, seed=seed, device=device, batch_size=batch_size
    )
