"""A variational autoencoder (Kingma & Welling 2014), MLP or convolutional, for (C, H, W) images.

The decoder is Bernoulli (pixels binarised at mid-grey, the usual setting for MNIST NLLs in
nats) or Gaussian (one learned scale shared by all pixels, on the [-1, 1] data). `beta` weighs
the KL term (beta-VAE) and `kl_warmup` ramps it in from 0 over a share of the steps, against
posterior collapse. Every likelihood reported uses beta = 1: it is the true ELBO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gentune.errors import GentuneError
from gentune.models.config import OPTIMIZERS, ConfigBase

ARCHS = ("mlp", "conv")
DECODERS = ("bernoulli", "gaussian")
MIN_LOG_SCALE = -4.0  # a Gaussian scale below e^-4 on [-1, 1] data only rewards memorising


@dataclass(frozen=True)
class VAEConfig(ConfigBase):
    """Everything that defines one VAE trial apart from data, budget and seed."""

    # "mlp" (fully connected) or "conv" (two strided convolutions each way; H, W divisible by 4).
    arch: str = "mlp"
    # Size of the latent vector z.
    latent_dim: int = 16
    # MLP: hidden units per layer.
    width: int = 256
    # MLP: hidden layers in the encoder and in the decoder.
    depth: int = 2
    # conv: channels of the first convolution (the second has 2x).
    channels: int = 32
    # "bernoulli" (binarised pixels, logits out) or "gaussian" (mean out, one learned scale).
    decoder: str = "bernoulli"
    # Weight of the KL term in the training loss (1.0 = the plain ELBO).
    beta: float = 1.0
    # Share of the training steps over which the KL weight rises linearly from 0 to beta.
    kl_warmup: float = 0.0
    # Dropout after each hidden layer of the MLP (0 = none).
    dropout: float = 0.0
    # Optimizer: adam, adamw, sgd or rmsprop.
    optimizer: str = "adam"
    lr: float = 1e-3
    beta1: float = 0.9  # Adam/AdamW first-moment decay
    beta2: float = 0.999  # Adam/AdamW second-moment decay
    momentum: float = 0.9  # sgd / rmsprop only
    weight_decay: float = 0.0
    batch_size: int = 64
    # Importance samples per image for the final NLL estimate (IWAE bound; Burda et al. 2016).
    nll_samples: int = 100

    _POSITIVE_INTS = ("latent_dim", "width", "depth", "channels", "batch_size", "nll_samples")
    _POSITIVE = ("lr", "beta")
    _NONNEG = ("weight_decay",)
    _UNIT = ("beta1", "beta2", "momentum", "dropout")
    _FRACTION = ("kl_warmup",)
    _CHOICES = {"arch": ARCHS, "decoder": DECODERS, "optimizer": OPTIMIZERS}


def _mlp(d_in: int, width: int, depth: int, d_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class VAE(nn.Module):
    """encode(x) -> (mu, logvar); decode(z) -> logits (bernoulli) or means (gaussian)."""

    def __init__(self, config: VAEConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        c, h, w = self.image_shape = tuple(int(s) for s in image_shape)
        self.latent_dim, self.decoder = config.latent_dim, config.decoder
        self.nll_samples = config.nll_samples
        self.meta = {"image_shape": list(self.image_shape)}
        d, z2 = c * h * w, 2 * config.latent_dim
        if config.arch == "mlp":
            self.enc = nn.Sequential(nn.Flatten(), _mlp(d, config.width, config.depth, z2, config.dropout))
            self.dec = nn.Sequential(
                _mlp(config.latent_dim, config.width, config.depth, d, config.dropout),
                nn.Unflatten(1, self.image_shape),
            )
        else:
            if h % 4 or w % 4:
                raise GentuneError(
                    "the conv VAE needs an image height and width divisible by 4",
                    value=(h, w),
                    fix="use arch='mlp' for this data",
                )
            ch, flat = config.channels, 2 * config.channels * (h // 4) * (w // 4)
            self.enc = nn.Sequential(
                nn.Conv2d(c, ch, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(ch, 2 * ch, 4, 2, 1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(flat, z2),
            )
            self.dec = nn.Sequential(
                nn.Linear(config.latent_dim, flat),
                nn.ReLU(),
                nn.Unflatten(1, (2 * ch, h // 4, w // 4)),
                nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(ch, c, 4, 2, 1),
            )
        # The Gaussian decoder's log-scale, shared by all pixels; unused by the Bernoulli one.
        self.log_scale = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder models: binarised pixels in {0, 1}, or the [-1, 1] pixels themselves."""
        return (x > 0).to(x.dtype) if self.decoder == "bernoulli" else x

    def log_likelihood(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image, in nats: (N,)."""
        if self.decoder == "bernoulli":
            ll = -nn.functional.binary_cross_entropy_with_logits(out, target, reduction="none")
        else:
            s = self.log_scale.clamp(min=MIN_LOG_SCALE)
            ll = -0.5 * ((target - out) / s.exp()) ** 2 - s - 0.5 * math.log(2 * math.pi)
        return ll.flatten(1).sum(1)

    def images(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> images in [-1, 1]: the decoder's mean."""
        if self.decoder == "bernoulli":
            return torch.sigmoid(out) * 2 - 1
        return out.clamp(-1, 1)


def build(config: VAEConfig, image_shape: tuple[int, int, int]) -> VAE:
    """A freshly initialised VAE for images of shape (C, H, W)."""
    return VAE(config, image_shape)
