"""Training and sampling for the diffusion model.

Training minimises ||eps - eps_hat(x_t, t)||^2 with t uniform over the T steps (Ho et al.'s
simple loss). Samples come from an exponential moving average of the weights, by ancestral
sampling over `sample_steps` evenly spaced steps, with the predicted x0 clipped to [-1, 1].
"""

from __future__ import annotations

import copy
import time

import torch

from gentune.data.base import ImageDataset
from gentune.device import resolve_device
from gentune.errors import GentuneError
from gentune.models.diffusion import Diffusion, DiffusionConfig, build
from gentune.train.callback import Callback
from gentune.train.loop import Batches, Loop, TrainResult, check_budget, fit, fixed_subset, seeded_build
from gentune.train.optim import make_optimizer

SIGNALS = ("loss",)  # mean squared error of the predicted noise, per pixel
CURVE_N = 512
MEASURE_SEED = 777


@torch.no_grad()
def denoising_loss(
    model: Diffusion, x0: torch.Tensor, *, seed: int = MEASURE_SEED, batch: int = 1024
) -> float:
    """The noise-prediction MSE on `x0` with steps and noise fixed by `seed`, in eval mode."""
    was = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(model.timesteps, (len(x0),), generator=gen).to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    total = 0.0
    for xb, tb, eb in zip(x0.split(batch), t.split(batch), eps.split(batch)):
        total += float(((model(model.noised(xb, tb, eb), tb) - eb) ** 2).sum())
    model.train(was)
    return total / max(1, x0.numel())


def diffusion_loop(
    config: DiffusionConfig,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Loop:
    """The diffusion model's training run for the one loop: `steps` updates or `epochs` passes.

    The loop's model (and the result's) is the EMA model that samples are drawn from. `curves`
    are the denoising loss of fixed train and validation slices (same steps and noise at every
    evaluation).
    """
    dev = resolve_device(device)
    x = data.train.x.to(dev, torch.float32)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = Batches(x, config.batch_size, gen)
    total = check_budget(steps, epochs, batches.per_epoch)
    model = seeded_build(seed, lambda: build(config, data.shape), dev).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False) if config.ema else model
    opt = make_optimizer(config, model.parameters())
    slices = fixed_subset(x, CURVE_N, 1), fixed_subset(data.val.x.to(dev, torch.float32), CURVE_N, 2)

    def step(i: int) -> torch.Tensor:
        x0 = batches.next()
        t = torch.randint(config.timesteps, (len(x0),), generator=gen, device=dev)
        eps = torch.randn(x0.shape, generator=gen, device=dev)
        loss = ((model(model.noised(x0, t, eps), t) - eps) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not model:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - config.ema)
        return loss.detach()[None]

    return Loop(
        step,
        lambda: (denoising_loss(model, slices[0]), denoising_loss(model, slices[1])),
        SIGNALS,
        ema,
        total,
        epochs=lambda: batches.consumed / batches.per_epoch,
        config=config,
        seed=seed,
        device=str(dev),
    )


def train_diffusion(
    config: DiffusionConfig,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    log_every: int | None = None,
    callback: Callback | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train on `data.train` (see `diffusion_loop`); `result.model` is the EMA model."""
    t0 = time.perf_counter()
    loop = diffusion_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)
    return fit(loop, callback=callback, max_seconds=max_seconds, log_every=log_every, t0=t0)


@torch.no_grad()
def _ancestral(model: Diffusion, n: int, gen: torch.Generator, dev: torch.device) -> torch.Tensor:
    """DDPM ancestral sampling over `model.sample_steps` evenly spaced steps (respaced schedule)."""
    steps = torch.linspace(0, model.timesteps - 1, model.sample_steps).round().long().unique()
    ab = model.alpha_bar.cpu()[steps].double()
    ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    betas = 1 - ab / ab_prev
    x = torch.randn(n, *model.image_shape, generator=gen).to(dev)
    for i in reversed(range(len(steps))):
        t = torch.full((n,), int(steps[i]), device=dev)
        eps = model(x, t)
        x0 = ((x - (1 - ab[i]).sqrt().item() * eps) / ab[i].sqrt().item()).clamp(-1, 1)
        if i == 0:
            return x0
        c0 = (ab_prev[i].sqrt() * betas[i] / (1 - ab[i])).item()
        ct = ((1 - betas[i]).sqrt() * (1 - ab_prev[i]) / (1 - ab[i])).item()
        var = (betas[i] * (1 - ab_prev[i]) / (1 - ab[i])).item()
        x = c0 * x0 + ct * x + var**0.5 * torch.randn(x.shape, generator=gen).to(dev)
    return x


def sample(
    model: Diffusion, n: int, *, seed: int = 0, device: str = "cpu", batch_size: int = 2000
) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU; all noise is drawn on the CPU from `seed`."""
    if not isinstance(n, int) or n < 0:
        raise GentuneError("the number of samples must be an integer >= 0", value=n, fix="pass 1000")
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    was = model.training
    model.to(dev).eval()
    try:
        out = [_ancestral(model, min(batch_size, n - s), gen, dev).cpu() for s in range(0, n, batch_size)]
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.empty(0, *model.image_shape)


def evaluate(model: Diffusion, data: ImageDataset, *, device: str = "cpu", final: bool = True) -> dict:
    """The validation denoising loss (per-pixel MSE of the predicted noise; not a likelihood)."""
    del final
    dev = resolve_device(device)
    model.to(dev)
    return {"denoising_loss": denoising_loss(model, data.val.x.to(dev, torch.float32))}
