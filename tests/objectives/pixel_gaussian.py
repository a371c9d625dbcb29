"""A family defined outside gentune: independent Gaussian pixels, fitted by gradient descent.

It is the smallest real generative model that follows the family contract (docs/families.md):
a config dataclass, a default space, a training loop (a step and a measurement that gentune's
one loop runs) and a sampler; training and checkpoints come from Family's defaults. Trained on
a handful of images (`n_train`) its scales shrink to fit them, so its validation NLL rises
while its training NLL falls: real overfitting, which the tests use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gentune.families import Family
from gentune.models.config import ConfigBase
from gentune.search.space import FloatSpec, SearchSpace
from gentune.train.loop import Loop, check_budget, fixed_subset


@dataclass(frozen=True)
class PixelGaussianConfig(ConfigBase):
    lr: float = 0.05
    n_train: int = 0  # train on the first n training images only; 0: all of them
    optimizer: str = "adam"

    _POSITIVE = ("lr",)
    _NONNEG_INTS = ("n_train",)
    _CHOICES = {"optimizer": ("adam",)}


class PixelGaussianModel(nn.Module):
    def __init__(self, image_shape):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.meta = {"image_shape": list(self.image_shape)}
        self.mean = nn.Parameter(torch.zeros(self.image_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.image_shape))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per image, in nats."""
        z = (x - self.mean) / self.log_scale.exp()
        per_pixel = 0.5 * z**2 + self.log_scale + 0.5 * math.log(2 * math.pi)
        return per_pixel.flatten(1).sum(1).mean()


class PixelGaussian(Family):
    name = "pixel-gaussian"
    config_cls = PixelGaussianConfig
    likelihood = True
    default_steps = {"digits": 200}

    def default_space(self, kind="image"):
        return SearchSpace({"lr": FloatSpec(low=0.01, high=0.1, log=True)})

    def loop(self, config, data, *, steps=None, epochs=None, seed=0, device="cpu"):
        x = data.train.x[: config.n_train or None]
        total = check_budget(steps, epochs, 1)
        model = PixelGaussianModel(data.shape)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        val = fixed_subset(data.val.x, 256, 2)

        def step(i):
            loss = model.nll(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.detach()[None]

        def measure():
            with torch.no_grad():
                return float(model.nll(x)), float(model.nll(val))

        return Loop(step, measure, ("loss",), model, total, log_every=10, config=config, seed=seed)

    def sample(self, model, n, *, seed=0, device="cpu"):
        z = torch.randn(n, *model.image_shape, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return (model.mean + model.log_scale.exp() * z).clamp(-1, 1)

    def evaluate(self, model, data, *, device="cpu", final=True):
        with torch.no_grad():
            return {"nll": float(model.nll(data.val.x))}

    def build_model(self, config, meta):
        return PixelGaussianModel(meta["image_shape"])
