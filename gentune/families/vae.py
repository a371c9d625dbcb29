"""The VAE family: MLP or convolutional, Bernoulli or Gaussian decoder (gentune.models.vae)."""

from __future__ import annotations

from typing import Any

from gentune.data.base import ImageDataset
from gentune.families.base import Family
from gentune.models import vae as models
from gentune.search.defaults import vae_space
from gentune.search.space import SearchSpace
from gentune.train import vae as trainer
from gentune.train.loop import Loop


class VAE(Family):
    """A variational autoencoder, MLP or convolutional."""

    name = "vae"
    config_cls = models.VAEConfig
    likelihood = True
    default_steps = {"digits": 3000, "mnist": 6000}

    def default_space(self, kind: str = "image") -> SearchSpace:
        return vae_space()

    def loop(
        self,
        config: Any,
        data: ImageDataset,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> Loop:
        return trainer.vae_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)

    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        return trainer.sample(model, n, seed=seed, device=device)

    def evaluate(self, model: Any, data: Any, *, device: str = "cpu", final: bool = True) -> dict[str, float]:
        return trainer.evaluate(model, data, device=device, final=final)

    def build_model(self, config: Any, meta: dict[str, Any]) -> models.VAE:
        return models.build(config, meta["image_shape"])
