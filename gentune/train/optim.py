"""Optimizers and learning-rate schedules, shared by every family's trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from gentune.errors import GentuneError


def optimizer(name: str, params, lr: float, config) -> torch.optim.Optimizer:
    """The optimizer `name` with the config's betas / momentum and weight decay."""
    # fused=True runs the update as one kernel: 2-4x faster on CPU for these small networks.
    if name == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, fused=True
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, fused=True
        )
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=True
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise GentuneError(f"unknown optimizer {name!r}", fix="use adam, adamw, sgd or rmsprop")


def make_optimizer(config, params) -> torch.optim.Optimizer:
    """The config's optimizer with its lr, betas / momentum and weight decay."""
    return optimizer(config.optimizer, params, config.lr, config)


def lr_lambda(warmup: int, total: int, schedule: str, min_ratio: float = 0.1) -> Callable[[int], float]:
    """Linear warm-up over `warmup` steps, then constant or cosine decay to `min_ratio` x lr."""

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
