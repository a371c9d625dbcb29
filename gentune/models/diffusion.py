"""A small denoising diffusion model (DDPM; Ho et al. 2020): an MLP or a tiny U-Net predicts the
noise added to an image at a random step t of a fixed noising schedule.

The linear schedule is Ho et al.'s (1e-4 to 0.02 over 1000 steps), rescaled for fewer steps as
in Nichol & Dhariwal 2021 so that the last step is about equally noisy; the cosine schedule is
Nichol & Dhariwal's. Sampling may skip steps (`sample_steps`, "respacing"), which trades a
little quality for a proportional speed-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gentune.errors import GentuneError
from gentune.models.config import OPTIMIZERS, ConfigBase

ARCHS = ("mlp", "unet")
SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True)
class DiffusionConfig(ConfigBase):
    """Everything that defines one diffusion trial apart from data, budget and seed."""

    # "mlp" (flattened image + time embedding) or "unet" (one down/up level; even H and W).
    arch: str = "mlp"
    # MLP: hidden units per layer.
    width: int = 256
    # MLP: hidden layers. U-Net: residual blocks per level.
    depth: int = 3
    # U-Net: channels at full resolution (2x at half resolution).
    channels: int = 32
    # Noising steps T of the forward process.
    timesteps: int = 200
    # "linear" (rescaled for T) or "cosine" noise schedule.
    noise_schedule: str = "cosine"
    # Steps used when sampling; 0 = all T (respaced evenly when fewer).
    sample_steps: int = 0
    # Decay of the exponential moving average of the weights that samples are drawn from (0 = off).
    ema: float = 0.995
    optimizer: str = "adam"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.9  # sgd / rmsprop only
    weight_decay: float = 0.0
    batch_size: int = 64

    _POSITIVE_INTS = ("width", "depth", "channels", "timesteps", "batch_size")
    _NONNEG_INTS = ("sample_steps",)
    _POSITIVE = ("lr",)
    _NONNEG = ("weight_decay",)
    _UNIT = ("beta1", "beta2", "momentum", "ema")
    _CHOICES = {"arch": ARCHS, "noise_schedule": SCHEDULES, "optimizer": OPTIMIZERS}

    def check(self) -> None:
        if self.timesteps < 2 or self.sample_steps > self.timesteps:
            raise GentuneError(
                "DiffusionConfig needs timesteps >= 2 and sample_steps <= timesteps",
                value={"timesteps": self.timesteps, "sample_steps": self.sample_steps},
                fix="e.g. timesteps 200 with sample_steps 0 (all) or 50",
            )


def alpha_bars(config: DiffusionConfig) -> torch.Tensor:
    """Cumulative products of (1 - beta_t), t = 1..T, float64, shape (T,)."""
    t = config.timesteps
    if config.noise_schedule == "linear":
        scale = 1000 / t
        betas = torch.linspace(scale * 1e-4, min(0.999, scale * 0.02), t, dtype=torch.float64)
        return torch.cumprod(1 - betas, 0)
    s = 0.008
    steps = torch.arange(t + 1, dtype=torch.float64) / t
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps t (N,) -> (N, dim), as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class MLPDenoiser(nn.Module):
    def __init__(self, config: DiffusionConfig, image_shape):
        super().__init__()
        d, w = math.prod(image_shape), config.width
        self.temb = nn.Sequential(nn.Linear(w, w), nn.SiLU())
        self.inp = nn.Linear(d, w)
        self.layers = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(w, w)) for _ in range(config.depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(w, d))
        self.width = w

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.temb(time_embedding(t, self.width))
        h = self.inp(x.flatten(1))
        for layer in self.layers:
            h = h + layer(h + emb)
        return self.out(h).view_as(x)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(min(8, c_in), c_in), nn.GroupNorm(min(8, c_out), c_out)
        self.conv1, self.conv2 = nn.Conv2d(c_in, c_out, 3, padding=1), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.temb = nn.Linear(t_dim, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.temb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


class TinyUNet(nn.Module):
    """One resolution step down and up, with a skip connection: enough for 8x8 and 28x28 digits."""

    def __init__(self, config: DiffusionConfig, image_shape):
        super().__init__()
        c, h, w = image_shape
        if h % 2 or w % 2:
            raise GentuneError(
                "the diffusion U-Net needs an even image height and width",
                value=(h, w),
                fix="use arch='mlp' for this data",
            )
        ch, self.t_dim = config.channels, 4 * config.channels
        self.temb = nn.Sequential(nn.Linear(ch, self.t_dim), nn.SiLU(), nn.Linear(self.t_dim, self.t_dim))
        self.inp = nn.Conv2d(c, ch, 3, padding=1)
        self.down = nn.ModuleList(ResBlock(ch, ch, self.t_dim) for _ in range(config.depth))
        self.pool = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.mid = nn.ModuleList(ResBlock(2 * ch, 2 * ch, self.t_dim) for _ in range(config.depth))
        self.upconv = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * ch, ch, 3, padding=1)
        )
        self.up = nn.ModuleList(
            ResBlock(2 * ch if i == 0 else ch, ch, self.t_dim) for i in range(config.depth)
        )
        self.out = nn.Sequential(nn.GroupNorm(min(8, ch), ch), nn.SiLU(), nn.Conv2d(ch, c, 3, padding=1))
        self.width = ch

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.temb(time_embedding(t, self.width))
        h = self.inp(x)
        for block in self.down:
            h = block(h, emb)
        skip = h
        h = self.pool(h)
        for block in self.mid:
            h = block(h, emb)
        h = torch.cat([self.upconv(h), skip], 1)
        for block in self.up:
            h = block(h, emb)
        return self.out(h)


class Diffusion(nn.Module):
    """The noise predictor with its schedule: eps_hat = net(x_t, t)."""

    alpha_bar: torch.Tensor  # a buffer: cumulative products of (1 - beta_t), t = 0..T-1

    def __init__(self, config: DiffusionConfig, image_shape):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.meta = {"image_shape": list(self.image_shape)}
        self.net = (MLPDenoiser if config.arch == "mlp" else TinyUNet)(config, self.image_shape)
        self.timesteps, self.sample_steps = config.timesteps, config.sample_steps or config.timesteps
        self.register_buffer("alpha_bar", alpha_bars(config).float(), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, for steps t in 0..T-1."""
        ab = self.alpha_bar[t].view(-1, *[1] * (x0.dim() - 1))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def build(config: DiffusionConfig, image_shape) -> Diffusion:
    """A freshly initialised diffusion model for images of shape (C, H, W)."""
    return Diffusion(config, image_shape)
