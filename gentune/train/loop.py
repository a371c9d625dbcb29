"""What every family's trainer shares: the config base, the result, the loop and the loss curves.

A trainer built on `run_loop` supplies one function that does an optimiser step and returns its
training signals, and one that measures the loss on a fixed slice of the training data and on
a fixed slice of the validation data. The loop handles the budget, divergence, the time limit,
the callback and the overfitting monitor, so every family reports the same things on the same
schedule (see docs/families.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gentune.errors import GentuneError
from gentune.models.config import _is_int, _is_number
from gentune.train.callback import Callback, adapt

FINAL_LOSS_WINDOW = 100  # the final training losses are means over this many last steps
DIVERGED_LOSS = 1e6  # a likelihood loss this large (nats) means the weights have blown up
# Validation rising for this many evaluations in a row while training falls flags overfitting.
OVERFIT_PATIENCE = 3


@dataclass
class TrainResult:
    """What one training run produced, in the same form for every family.

    `losses` are the final training losses (means over the last FINAL_LOSS_WINDOW steps), keyed
    by the family's own names; `curves` are the train and validation losses measured the same
    way on the same schedule, with their gap (see LossCurves).
    """

    model: Any  # what Family.sample takes; in eval mode
    config: Any
    losses: dict[str, float]
    curves: list[dict] = field(default_factory=list)  # {step, train, val, gap}
    history: list[dict] = field(default_factory=list)  # {step, *signals}, per log window
    steps: int = 0
    epochs: float = 0.0
    seconds: float = 0.0
    device: str = "cpu"
    seed: int = 0
    diverged: bool = False
    stop_reason: str = "budget"  # "budget", "max_seconds" or "diverged"


class LossCurves:
    """Train and validation losses measured on the same schedule, and the gap between them."""

    def __init__(self):
        self.points: list[dict] = []

    def add(self, step: int, train: float, val: float) -> dict:
        point = {
            "step": int(step),
            "train": float(train),
            "val": float(val),
            "gap": float(val) - float(train),
        }
        self.points.append(point)
        return point

    def overfitting(self, patience: int = OVERFIT_PATIENCE) -> bool:
        return overfitting(self.points, patience)


def overfitting(curves: list[dict], patience: int = OVERFIT_PATIENCE) -> bool:
    """True when the validation loss rose at each of the last `patience` evaluations while the
    training loss fell over the same stretch.

    >>> pts = [{"train": t, "val": v} for t, v in [(3, 3), (2, 2.5), (1.5, 2.6), (1, 2.7), (.5, 2.8)]]
    >>> overfitting(pts, 3), overfitting(pts[:4], 3)
    (True, False)
    """
    if len(curves) <= patience:
        return False
    tail = curves[-patience - 1 :]
    val_rose = all(b["val"] > a["val"] for a, b in zip(tail, tail[1:]))
    return val_rose and tail[-1]["train"] < tail[0]["train"]


def overfit_step(curves: list[dict], patience: int = OVERFIT_PATIENCE) -> int | None:
    """The first step at which `overfitting` held on the curves so far, or None if it never did."""
    for i in range(patience + 1, len(curves) + 1):
        if overfitting(curves[:i], patience):
            return curves[i - 1].get("step")
    return None


class Batches:
    """Endless batches of a device tensor; a fresh permutation per epoch, last partial batch dropped."""

    def __init__(self, x: torch.Tensor, batch_size: int, gen: torch.Generator):
        if x.shape[0] < batch_size:
            raise GentuneError(
                f"batch_size is larger than the {x.shape[0]} training images",
                value=batch_size,
                fix=f"use batch_size <= {x.shape[0]}",
            )
        self.x, self.batch_size, self.gen = x, batch_size, gen
        self.per_epoch = x.shape[0] // batch_size
        self.consumed = 0
        self.perm = None

    def next(self) -> torch.Tensor:
        i = self.consumed % self.per_epoch
        if i == 0:
            self.perm = torch.randperm(self.x.shape[0], generator=self.gen, device=self.x.device)
        self.consumed += 1
        return self.x[self.perm[i * self.batch_size : (i + 1) * self.batch_size]]


def decode_latents(
    model: torch.nn.Module, n: int, latent_dim: int, decode: Callable, *, seed: int, device, batch_size: int
) -> torch.Tensor:
    """n images (n, C, H, W) on the CPU from `decode(z)` of z ~ N(0, I) drawn from `seed`.

    Latents are drawn on the CPU in one call, so they do not depend on device or batch size; the
    model moves to `device` (and stays there) and its train/eval mode is restored.
    """
    from gentune.device import resolve_device

    if not isinstance(n, int) or n < 0:
        raise GentuneError("the number of samples must be an integer >= 0", value=n, fix="pass 1000")
    dev = resolve_device(device)
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.to(dev).eval()
    try:
        with torch.inference_mode():
            out = [decode(zb.to(dev)).cpu() for zb in z.split(max(1, batch_size))]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *model.image_shape)


def check_budget(steps, epochs, per_epoch: int) -> int:
    """Total optimiser steps for a budget given as steps or as epochs of the training data."""
    if (steps is None) == (epochs is None):
        raise GentuneError(
            "give exactly one training budget: steps or epochs",
            value={"steps": steps, "epochs": epochs},
            fix="pass steps=N (optimiser updates) or epochs=E, not both and not neither",
        )
    if steps is not None:
        if not _is_int(steps) or steps < 1:
            raise GentuneError("steps must be an integer >= 1", value=steps, fix="pass steps=1000")
        return steps
    if not _is_number(epochs) or not math.isfinite(epochs) or epochs <= 0:
        raise GentuneError("epochs must be a finite number > 0", value=epochs, fix="pass epochs=5")
    return max(1, math.ceil(epochs * per_epoch - 1e-9))


def seeded_build(seed: int, make: Callable[[], torch.nn.Module], dev: torch.device) -> torch.nn.Module:
    """`make()` under `seed` without touching the global RNG state, moved to `dev`."""
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = make()
    return model.to(dev)


def fixed_subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The same `n` rows of `x` every call: the slice the loss curves are measured on."""
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx.to(x.device)]


@dataclass
class Loop:
    """One training loop: `step(i)` returns a 1-d tensor of signals (main loss first), `measure()`
    returns (train_loss, val_loss) on fixed slices. `model` is what the callback receives."""

    step: Callable[[int], torch.Tensor]
    measure: Callable[[], tuple[float, float]]
    signals: tuple[str, ...]
    model: Any
    total: int
    log_every: int | None = None
    callback: Callback | None = None
    max_seconds: float | None = None
    t0: float = field(default_factory=time.perf_counter)


def default_log_every(total: int) -> int:
    """About 20 evaluations a run, and none closer than 25 steps apart."""
    return max(25, total // 20)


def run_loop(loop: Loop) -> tuple[dict, list[dict], list[dict], int, str]:
    """Run it: (final losses, history, curves, steps done, stop reason).

    Every `log_every` steps (and at the last step) the signals since the last log are averaged,
    the train and validation losses measured, and all of it handed to the callback, which may
    raise (e.g. optuna.TrialPruned) to stop. A non-finite or exploded loss stops with "diverged".
    """
    every = loop.log_every or default_log_every(loop.total)
    if not _is_int(every) or every < 1:
        raise GentuneError("log_every must be an integer >= 1", value=every, fix="pass 50")
    record = None  # per step, on the model's device: read back only at log steps
    callback, curves, history = adapt(loop.callback), LossCurves(), []
    stop, step, logged = "budget", 0, 0
    for step in range(1, loop.total + 1):
        out = loop.step(step).detach().float()
        if record is None:
            record = torch.zeros(loop.total, len(loop.signals), device=out.device)
        record[step - 1] = out
        if (
            loop.max_seconds is not None
            and step < loop.total
            and time.perf_counter() - loop.t0 > loop.max_seconds
        ):
            stop = "max_seconds"
        if step % every and step != loop.total and stop == "budget":
            continue
        window = record[logged:step].cpu()
        if not bool((window.abs() <= DIVERGED_LOSS).all()):  # NaN fails the comparison too
            stop = "diverged"
        signals = dict(zip(loop.signals, window.mean(0).tolist()))
        if stop != "diverged":
            train, val = loop.measure()
            curves.add(step, train, val)
            signals.update(train_loss=train, val_loss=val)
        history.append({"step": step, **signals})
        logged = step
        if stop != "budget":
            break
        if callback is not None and step % every == 0:
            callback(step, loop.total, signals, loop.model)
    final = record[max(0, step - FINAL_LOSS_WINDOW) : step].mean(0).tolist()  # type: ignore[index]
    return dict(zip(loop.signals, final)), history, curves.points, step, stop
