"""The Transformer family: decoder-only, over quantised pixels in raster order or characters."""

from __future__ import annotations

from typing import Any

from gentune.families.base import Family
from gentune.models import transformer as models
from gentune.search.defaults import transformer_space
from gentune.search.space import SearchSpace
from gentune.train import transformer as trainer
from gentune.train.loop import Loop


class Transformer(Family):
    """A small decoder-only Transformer over pixels (raster order) or characters."""

    name = "transformer"
    config_cls = models.TransformerConfig
    likelihood = True
    data_kinds = ("image", "text")
    default_steps = {"digits": 400, "mnist": 3000, "text": 2000}

    def default_space(self, kind: str = "image") -> SearchSpace:
        return transformer_space(kind)

    def loop(
        self,
        config: Any,
        data: Any,
        *,
        steps: int | None = None,
        epochs: float | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> Loop:
        return trainer.transformer_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)

    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        return trainer.sample(model, n, seed=seed, device=device)

    def evaluate(self, model: Any, data: Any, *, device: str = "cpu", final: bool = True) -> dict[str, float]:
        return trainer.evaluate(model, data, device=device, final=final)

    def build_model(self, config: Any, meta: dict[str, Any]) -> models.TokenTransformer:
        return models.build(config, meta)  # text models need the vocabulary too, not just a shape
