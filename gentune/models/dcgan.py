"""A small convolutional GAN in the DCGAN pattern (Radford et al. 2016), for 8x8 and 28x28 images.

G: z -> linear -> (2w, H/4, W/4) -> two stride-2 transposed convolutions -> tanh.
D: two stride-2 convolutions with LeakyReLU -> linear -> one logit. D has no batch norm
(Kurach et al. 2019 found it hurts with the non-saturating loss); spectral normalisation of
D's layers is optional, and so is a separate learning rate for D (TTUR; Heusel et al. 2017).
It trains with the MLP GAN's step (gentune.train.gan) on the one loop, so both GANs share one
loss and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from gentune.errors import GentuneError
from gentune.models.config import OPTIMIZERS, ConfigBase


@dataclass(frozen=True)
class DCGANConfig(ConfigBase):
    """Everything that defines one DCGAN trial apart from data, budget and seed."""

    # Size of the noise vector z.
    latent_dim: int = 64
    # Channels of G's last hidden layer and D's first; the other hidden layer has 2x.
    width: int = 64
    # Batch norm in G (DCGAN's choice); D never has it.
    batch_norm: bool = True
    # Spectral normalisation of every layer of D (Miyato et al. 2018).
    spectral_norm: bool = False
    # Optimizer for both networks: adam, adamw, sgd or rmsprop.
    optimizer: str = "adam"
    # Generator learning rate (and D's when lr_d is None).
    lr: float = 2e-4
    # Discriminator learning rate; None means "same as lr".
    lr_d: float | None = None
    # Adam/AdamW first-moment decay; DCGAN's 0.5 (0.9 oscillates on GANs).
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.9  # sgd / rmsprop only
    weight_decay: float = 0.0
    batch_size: int = 64
    # D updates per G update.
    d_steps: int = 1

    _POSITIVE_INTS = ("latent_dim", "width", "batch_size", "d_steps")
    _POSITIVE = ("lr", "lr_d")
    _NONNEG = ("weight_decay",)
    _UNIT = ("beta1", "beta2", "momentum")
    _CHOICES = {"optimizer": OPTIMIZERS, "batch_norm": (True, False), "spectral_norm": (True, False)}

    @property
    def d_lr(self) -> float:
        """The discriminator's learning rate: lr_d, or lr when lr_d is None."""
        return self.lr if self.lr_d is None else self.lr_d


def _check_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4 or min(shape) < 1:
        raise GentuneError(
            "the DCGAN needs images (C, H, W) with H and W divisible by 4",
            value=shape,
            fix="use --model gan-mlp for this data, or crop/pad it",
        )
    return shape


class Generator(nn.Module):
    """z of shape (N, latent_dim) -> images (N, C, H, W) in [-1, 1]."""

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = self.image_shape = _check_shape(image_shape)
        self.latent_dim, ch = config.latent_dim, config.width
        norm = (lambda n: nn.BatchNorm2d(n)) if config.batch_norm else (lambda n: nn.Identity())
        self.model = nn.Sequential(
            nn.Linear(config.latent_dim, 2 * ch * (h // 4) * (w // 4)),
            nn.Unflatten(1, (2 * ch, h // 4, w // 4)),
            norm(2 * ch),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1),
            norm(ch),
            nn.ReLU(),
            nn.ConvTranspose2d(ch, c, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class Discriminator(nn.Module):
    """Images (N, C, H, W) -> logits (N, 1)."""

    outputs_logits = True  # the shared GAN loop reads this

    def __init__(self, config: DCGANConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = _check_shape(image_shape)
        ch = config.width
        sn = _sn if config.spectral_norm else (lambda m: m)
        self.model = nn.Sequential(
            sn(nn.Conv2d(c, ch, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            sn(nn.Conv2d(ch, 2 * ch, 4, 2, 1)),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            sn(nn.Linear(2 * ch * (h // 4) * (w // 4), 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build(config: DCGANConfig, image_shape: tuple[int, int, int]) -> tuple[Generator, Discriminator]:
    """A freshly initialised (generator, discriminator) pair for images of shape (C, H, W)."""
    return Generator(config, image_shape), Discriminator(config, image_shape)
