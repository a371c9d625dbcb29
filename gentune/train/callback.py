"""The trainer callback contract, shared by every family's trainer.

A trainer calls `callback(step, total, losses, model)` every `log_every` steps: `losses` holds the
mean training signals since the last call (e.g. `g_loss`, `d_loss`, `d_acc`, `grad_norm`, or `kl`
for a VAE) and `model` is what `Family.sample` draws from, so the callback can evaluate samples
mid-training. Callbacks written for the older three-argument form `callback(step, total, losses)`
keep working: `adapt` leaves the model out for them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

Callback = Callable[..., None]


def _takes_model(callback: Callable) -> bool:
    try:
        params = list(inspect.signature(callback).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 4


def adapt(callback: Callback | None) -> Callable[[int, int, dict, Any], None] | None:
    """`callback` as a four-argument function (step, total, losses, model), or None."""
    if callback is None or _takes_model(callback):
        return callback
    return lambda step, total, losses, model: callback(step, total, losses)
