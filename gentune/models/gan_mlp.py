"""The tutorial's MLP GAN (section 3.2), with its hyperparameters gathered in one config.

With the default `GANConfig` the generator and discriminator have exactly the tutorial's layers;
`width` and `depth` scale the same pattern. The discriminator ends in raw logits by default, the
numerically safe form of the tutorial's `nn.Sigmoid` + `BCELoss` (same model, same loss);
`d_output="sigmoid"` gives the literal tutorial head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from gentune.errors import GentuneError, unknown_choice

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
D_OUTPUTS = ("logits", "sigmoid")


@dataclass(frozen=True)
class GANConfig:
    """Everything that defines one GAN trial apart from data, budget and seed."""

    # Size of the noise vector z fed to the generator. Tutorial: 100.
    latent_dim: int = 100
    # Width of the generator's first hidden layer; layer i has width * 2**i. Tutorial: 128.
    width: int = 128
    # Number of hidden layers in G and in D. Tutorial: 2 (G: 128, 256; D mirrors it: 256, 128).
    depth: int = 2
    # Optimizer for both networks: adam, adamw, sgd or rmsprop. Tutorial: adam.
    optimizer: str = "adam"
    # Generator learning rate (and the discriminator's when lr_d is None). Default 2e-4.
    lr: float = 2e-4
    # Discriminator learning rate; None means "same as lr". Default None.
    lr_d: float | None = None
    # Adam/AdamW first-moment decay. Default 0.9 (Adam's default, which the tutorial keeps;
    # GAN practice prefers 0.5).
    beta1: float = 0.9
    # Adam/AdamW second-moment decay. Default 0.999 (Adam's default).
    beta2: float = 0.999
    # Momentum for sgd and rmsprop; unused by adam/adamw. Default 0.9.
    momentum: float = 0.9
    # L2 penalty (decoupled for adamw) for both optimizers. Default 0.0.
    weight_decay: float = 0.0
    # Images per batch, for real and for generated images. Tutorial: 64.
    batch_size: int = 64
    # Discriminator updates per generator update; each consumes one real batch. Default 1.
    d_steps: int = 1
    # "logits" (BCEWithLogits, default) or "sigmoid" (the tutorial's literal Sigmoid + BCELoss).
    d_output: str = "logits"

    def __post_init__(self):
        # Optuna and YAML hand over ints for float fields; store floats so to_dict round-trips.
        for name in ("lr", "lr_d", "beta1", "beta2", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
        self.validate()

    def validate(self) -> None:
        """Raise GentuneError naming the field, its value and the fix for the first bad value."""
        for name in ("latent_dim", "width", "depth", "batch_size", "d_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GentuneError(
                    f"GANConfig.{name} must be an integer >= 1",
                    value=value,
                    fix=f"set {name} to a positive integer, e.g. {_DEFAULTS[name]}",
                )
        if self.optimizer not in OPTIMIZERS:
            raise unknown_choice("GANConfig.optimizer", self.optimizer, OPTIMIZERS)
        if self.d_output not in D_OUTPUTS:
            raise unknown_choice("GANConfig.d_output", self.d_output, D_OUTPUTS)
        for name in ("lr", "lr_d"):
            value = getattr(self, name)
            if value is None and name == "lr_d":
                continue
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise GentuneError(
                    f"GANConfig.{name} must be a finite number > 0",
                    value=value,
                    fix=f"set {name} to a learning rate such as 2e-4"
                    + (" or to None to reuse lr" if name == "lr_d" else ""),
                )
        for name in ("beta1", "beta2", "momentum"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value < 1.0:
                raise GentuneError(
                    f"GANConfig.{name} must be a number in [0, 1)",
                    value=value,
                    fix=f"set {name} in [0, 1), e.g. {_DEFAULTS[name]}",
                )
        if not _is_number(self.weight_decay) or not 0.0 <= self.weight_decay < math.inf:
            raise GentuneError(
                "GANConfig.weight_decay must be a finite number >= 0",
                value=self.weight_decay,
                fix="set weight_decay to 0.0 or e.g. 1e-5",
            )

    @property
    def d_lr(self) -> float:
        """The discriminator's learning rate: lr_d, or lr when lr_d is None."""
        return self.lr if self.lr_d is None else self.lr_d

    def to_dict(self) -> dict:
        """Plain dict of all fields, suitable for JSON/YAML and for `from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GANConfig:
        """Build a config from a dict; unknown keys are an error (a typo must not pass silently)."""
        valid = [f.name for f in fields(cls)]
        if not isinstance(d, dict):
            raise GentuneError(
                "a GANConfig must be given as a mapping of field to value",
                value=type(d).__name__,
                fix=f"pass a dict with keys from: {', '.join(valid)}",
            )
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise GentuneError(
                f"unknown GANConfig field(s) {', '.join(map(repr, unknown))}",
                fix=f"use only these fields: {', '.join(valid)}",
            )
        return cls(**d)


_DEFAULTS = {f.name: f.default for f in fields(GANConfig)}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hidden_widths(config: GANConfig) -> list[int]:
    return [config.width * 2**i for i in range(config.depth)]


class Generator(nn.Module):
    """z of shape (N, latent_dim) -> images (N, C, H, W) in [-1, 1]."""

    def __init__(self, config: GANConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.latent_dim = config.latent_dim
        self.image_shape = tuple(int(s) for s in image_shape)
        layers: list[nn.Module] = []
        d_in = config.latent_dim
        for d_out in _hidden_widths(config):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
            d_in = d_out
        layers += [nn.Linear(d_in, math.prod(self.image_shape)), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.shape[0], *self.image_shape)


class Discriminator(nn.Module):
    """Images (N, C, H, W) -> (N, 1): logits, or probabilities when d_output="sigmoid"."""

    def __init__(self, config: GANConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.outputs_logits = config.d_output == "logits"
        layers: list[nn.Module] = []
        d_in = math.prod(image_shape)
        for d_out in reversed(_hidden_widths(config)):
            layers += [nn.Linear(d_in, d_out), nn.LeakyReLU(0.2)]
            d_in = d_out
        layers.append(nn.Linear(d_in, 1))
        if not self.outputs_logits:
            layers.append(nn.Sigmoid())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.flatten(1))


def build(config: GANConfig, image_shape: tuple[int, int, int]) -> tuple[Generator, Discriminator]:
    """A freshly initialised (generator, discriminator) pair for images of shape (C, H, W)."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise GentuneError(
            "image_shape must be (C, H, W) with positive sizes",
            value=tuple(image_shape),
            fix="pass ImageDataset.shape",
        )
    return Generator(config, image_shape), Discriminator(config, image_shape)
