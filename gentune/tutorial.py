"""The tutorial's `train_gan(learning_rate, batch_size)`, which the tutorial leaves out.

It trains the tutorial's MLP GAN (Adam with default betas) and returns the final generator loss,
exactly the quantity the tutorial minimises, so the tutorial's own Optuna code runs unchanged:

>>> loss = train_gan(learning_rate=2e-4, batch_size=64, steps=20)
>>> loss > 0
True

gentune's own studies score samples instead (`--objective fid`); see the README for why.
"""

from __future__ import annotations

from functools import lru_cache

from gentune.data import load_dataset
from gentune.data.base import ImageDataset
from gentune.errors import GentuneError
from gentune.models.gan_mlp import GANConfig
from gentune.train.gan import train_gan as _train


@lru_cache(maxsize=4)
def _data(dataset: str) -> ImageDataset:
    data = load_dataset(dataset)
    if not isinstance(data, ImageDataset):
        raise GentuneError("the tutorial's GAN trains on images", value=dataset, fix="use dataset='digits'")
    return data


def train_gan(
    learning_rate: float, batch_size: int, *, dataset: str = "digits", steps: int = 1500, seed: int = 0
) -> float:
    """Train the tutorial's GAN with these two hyperparameters; return its final generator loss."""
    config = GANConfig(lr=learning_rate, batch_size=int(batch_size))
    return _train(config, _data(dataset), steps=steps, seed=seed).g_loss
