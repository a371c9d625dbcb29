"""Training, sampling and likelihood evaluation for the VAE.

The training loss is the negative ELBO with the KL term weighted by beta (ramped in over
`kl_warmup`); what is reported is always the plain ELBO (beta = 1), in nats per image, so
runs with different beta stay comparable. The final evaluation adds the importance-weighted
NLL estimate with `nll_samples` samples (Burda et al. 2016), which tightens the ELBO bound.
"""

from __future__ import annotations

import math
import time

import torch

from gentune.data.base import ImageDataset
from gentune.device import resolve_device
from gentune.models.vae import VAE, VAEConfig, build
from gentune.train.callback import Callback
from gentune.train.loop import (
    Batches,
    Loop,
    TrainResult,
    check_budget,
    decode_latents,
    fit,
    fixed_subset,
    seeded_build,
)
from gentune.train.optim import make_optimizer

SIGNALS = ("loss", "recon", "kl")  # loss = recon + kl = -ELBO, nats per image
CURVE_N = 512  # images in each fixed slice the train / validation curves are measured on
MEASURE_SEED = 777  # the curves' posterior noise, the same at every evaluation


def _kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def _terms(model: VAE, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction NLL, KL) per image, (N,) each, with one posterior sample."""
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen, device=mu.device)
    return -model.log_likelihood(model.decode(z), model.target(x)), _kl(mu, logvar)


@torch.no_grad()
def neg_elbo(model: VAE, x: torch.Tensor, *, seed: int = MEASURE_SEED, batch: int = 2048) -> float:
    """Mean -ELBO (beta = 1) in nats per image, in eval mode, with fixed posterior noise."""
    was = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for xb in x.split(batch):
        rec, kl = _terms(model, xb, gen)
        total += float((rec + kl).sum())
    model.train(was)
    return total / max(1, len(x))


@torch.no_grad()
def importance_nll(
    model: VAE, x: torch.Tensor, k: int, *, seed: int = MEASURE_SEED, rows: int = 32768
) -> float:
    """Mean importance-sampled NLL in nats per image: -log mean_k p(x, z_k) / q(z_k | x)."""
    was = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    per = max(1, rows // k)
    total = 0.0
    for xb in x.split(per):
        mu, logvar = model.encode(xb)
        std = (0.5 * logvar).exp()
        eps = torch.randn((k, *mu.shape), generator=gen, device=x.device)
        z = mu + std * eps  # (k, B, L)
        flat = z.flatten(0, 1)
        target = model.target(xb).expand(k, *xb.shape).flatten(0, 1)
        log_px = model.log_likelihood(model.decode(flat), target).view(k, -1)
        log_pz = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_qz = (-0.5 * eps.pow(2) - 0.5 * math.log(2 * math.pi) - std.log()).sum(-1)
        log_w = log_px + log_pz - log_qz
        total += float(-(torch.logsumexp(log_w, 0) - math.log(k)).sum())
    model.train(was)
    return total / max(1, len(x))


def vae_loop(
    config: VAEConfig,
    data: ImageDataset,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> Loop:
    """The VAE's training run for the one loop: `steps` updates or `epochs` passes.

    `losses` hold the final means of `loss` (-ELBO), `recon` and `kl`, in nats per image;
    `curves` the -ELBO of fixed train and validation slices. The same seed gives the same weights.
    """
    dev = resolve_device(device)
    x = data.train.x.to(dev, torch.float32)
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = Batches(x, config.batch_size, gen)
    total = check_budget(steps, epochs, batches.per_epoch)
    model = seeded_build(seed, lambda: build(config, data.shape), dev).train()
    opt = make_optimizer(config, model.parameters())
    warm = config.kl_warmup * total
    slices = fixed_subset(x, CURVE_N, 1), fixed_subset(data.val.x.to(dev, torch.float32), CURVE_N, 2)

    def step(i: int) -> torch.Tensor:
        rec, kl = (t.mean() for t in _terms(model, batches.next(), gen))
        weight = config.beta * min(1.0, i / warm) if warm else config.beta
        opt.zero_grad(set_to_none=True)
        (rec + weight * kl).backward()
        opt.step()
        return torch.stack([rec + kl, rec, kl])

    return Loop(
        step,
        lambda: (neg_elbo(model, slices[0]), neg_elbo(model, slices[1])),
        SIGNALS,
        model,
        total,
        epochs=lambda: batches.consumed / batches.per_epoch,
        config=config,
        seed=seed,
        device=str(dev),
    )


def train_vae(
    config: VAEConfig,
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
    """Train the VAE on `data.train` (see `vae_loop`) and return what it produced."""
    t0 = time.perf_counter()
    loop = vae_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)
    return fit(loop, callback=callback, max_seconds=max_seconds, log_every=log_every, t0=t0)


def sample(model: VAE, n: int, *, seed: int = 0, device: str = "cpu", batch_size: int = 4096) -> torch.Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU: decoder means of z ~ N(0, I) drawn from `seed`."""
    return decode_latents(
        model,
        n,
        model.latent_dim,
        lambda z: model.images(model.decode(z)),
        seed=seed,
        device=device,
        batch_size=batch_size,
    )


def evaluate(
    model: VAE, data: ImageDataset, *, device: str = "cpu", final: bool = True, k: int | None = None
) -> dict:
    """Validation likelihood in nats per image: `elbo` (a lower bound on log p(x), so negative),
    and with `final` the importance-sampled `nll` (k samples; a tighter bound, positive) and
    its `bits_per_dim`."""
    dev = resolve_device(device)
    model.to(dev)
    x = data.val.x.to(dev, torch.float32)
    out = {"elbo": -neg_elbo(model, x)}
    if final:
        k = k or model.nll_samples
        nll = importance_nll(model, x, k)
        out.update(nll=nll, nll_samples=k, bits_per_dim=nll / (math.prod(model.image_shape) * math.log(2)))
    return out
