"""Model families: a config class, a default search space, a trainer and a sampler.

A new family is one entry here (one registry line) plus its model and trainer modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .errors import unknown_choice
from .search.defaults import gan_mlp_space
from .search.space import SearchSpace


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type  # frozen dataclass with to_dict() / from_dict()
    default_space: Callable[[], SearchSpace]
    train: Callable[..., Any]  # train(config, data, *, steps, epochs, seed, device, callback) -> result
    sample: Callable[..., Any]  # sample(model, n, *, seed, device) -> (n, C, H, W) in [-1, 1]


def _gan_mlp() -> Family:
    from .models.gan_mlp import GANConfig
    from .train.gan import sample, train_gan

    return Family("gan-mlp", GANConfig, gan_mlp_space, train_gan, sample)


_REGISTRY: dict[str, Callable[[], Family]] = {"gan-mlp": _gan_mlp}
MODELS = tuple(_REGISTRY)


def get_family(name: str) -> Family:
    """The family registered under `name`; an unknown name lists the valid ones."""
    if name not in _REGISTRY:
        raise unknown_choice("model", name, MODELS)
    return _REGISTRY[name]()
