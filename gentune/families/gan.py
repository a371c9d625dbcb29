"""The GAN families: the tutorial's MLP GAN and a small DCGAN, trained by one GAN step
(gentune.train.gan) on the one loop."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from gentune.data.base import ImageDataset
from gentune.families.base import Family, image_meta
from gentune.models import dcgan, gan_mlp
from gentune.search.defaults import dcgan_space, gan_mlp_space
from gentune.search.space import SearchSpace
from gentune.train import gan
from gentune.train.checkpoint import MODEL_FORMAT
from gentune.train.loop import Loop

# gentune 0.1.0 saved MLP GANs as {format, config, image_shape, generator, extra}.
LEGACY_GAN_FORMAT = "gentune-gan-checkpoint/1"


class GanMlp(Family):
    """The tutorial's MLP GAN."""

    name = "gan-mlp"
    config_cls: ClassVar[type[Any]] = gan_mlp.GANConfig
    main_loss = "g"
    population = True
    # 1000 steps on digits: the main job in under a minute on 2 cores (bench/main_job.py), at
    # the best FIDs of 3000 steps (seeds 1-4, two workers: 1.56 1.95 1.47 2.30 against 1.06 2.19
    # 2.89 1.54, README Measured). Studies made under the earlier 3000 stored no steps and keep it.
    default_steps: ClassVar[dict[str, int]] = {"digits": 1000, "mnist": 8000}
    unstored_steps: ClassVar[dict[str, int]] = {"digits": 3000, "mnist": 8000}

    def default_space(self, kind: str = "image") -> SearchSpace:
        return gan_mlp_space()

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
        return gan.gan_loop(config, data, steps=steps, epochs=epochs, seed=seed, device=device)

    def sample(self, model: Any, n: int, *, seed: int = 0, device: str = "cpu") -> Any:
        return gan.sample(model, n, seed=seed, device=device)

    def build_model(self, config: Any, meta: dict[str, Any]) -> nn.Module:
        return gan_mlp.Generator(config, meta["image_shape"])

    def model_meta(self, model: Any) -> dict[str, Any]:
        return image_meta(model)

    def upgrade_checkpoint(self, payload: dict[str, Any]) -> dict[str, Any]:
        """gentune 0.1.0's `gentune-gan-checkpoint/1` files, read as gan-mlp model checkpoints."""
        if payload.get("format") != LEGACY_GAN_FORMAT:
            return payload
        return {
            "format": MODEL_FORMAT,
            "family": GanMlp.name,
            "config": payload["config"],
            "meta": {"image_shape": [int(s) for s in payload["image_shape"]]},
            "state": payload["generator"],
            "extra": payload.get("extra", {}),
        }


class DCGAN(GanMlp):
    """A small convolutional GAN, trained by the same step and loop as the MLP GAN."""

    unstored_steps: ClassVar[dict[str, int]] = {}  # its studies always stored their steps

    name = "dcgan"
    config_cls = dcgan.DCGANConfig
    default_steps = {"digits": 1000, "mnist": 4000}

    def default_space(self, kind: str = "image") -> SearchSpace:
        return dcgan_space()

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
        return gan.gan_loop(
            config, data, steps=steps, epochs=epochs, seed=seed, device=device, builder=dcgan.build
        )

    def build_model(self, config: Any, meta: dict[str, Any]) -> nn.Module:
        return dcgan.Generator(config, meta["image_shape"])
