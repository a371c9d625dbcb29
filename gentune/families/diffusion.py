"""The diffusion family: a small DDPM with an MLP or tiny U-Net noise predictor."""

from __future__ import annotations

from typing import Any

from gentune.data.base import ImageDataset
from gentune.families.base import Family
from gentune.models import diffusion as models
from gentune.search.defaults import diffusion_space
from gentune.search.space import SearchSpace
from gentune.train import diffusion as trainer
from gentune.train.loop import Loop


class Diffusion(Family):
    """A small DDPM with an MLP or tiny U-Net noise predictor."""

    name = "diffusion"
    config_cls = models.DiffusionConfig
    default_steps = {"digits": 1000, "mnist": 6000}
    # Sampling 1000 images (50 denoising steps) takes 6-19 s on one core against 14-25 s for
    # the 1000 training steps of a digits trial: at N = 1000 the five evaluations would cost
    # more than the training they watch.
    eval_samples = 250

    def default_space(self, kind: str = "image") -> SearchSpace:
        return diffusion_space()

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
        return trainer.diffusion_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)

    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        return trainer.sample(model, n, seed=seed, device=device)

    def evaluate(self, model: Any, data: Any, *, device: str = "cpu", final: bool = True) -> dict[str, float]:
        return trainer.evaluate(model, data, device=device, final=final)

    def build_model(self, config: Any, meta: dict[str, Any]) -> models.Diffusion:
        return models.build(config, meta["image_shape"])
