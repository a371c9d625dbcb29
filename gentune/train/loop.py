"""The one training loop every family runs, its result and the loss curves.

A family describes one training run as a `Loop`: a function that does an optimiser step and
returns its training signals, and one that measures the loss on a fixed slice of the training
data and on a fixed slice of the validation data. `run_loop` handles the budget, divergence,
the time limit, the callback and the overfitting monitor, so every family reports the same
things on the same schedule; `fit` runs it and gathers the `TrainResult` (docs/families.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

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
    # What a family keeps besides the model (the GANs' discriminator); see Loop.extras.
    extras: dict[str, Any] = field(default_factory=dict)


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
        self.perm = torch.empty(0, dtype=torch.long)  # drawn at the first batch of each epoch

    def next(self) -> torch.Tensor:
        i = self.consumed % self.per_epoch
        if i == 0:
            self.perm = torch.randperm(self.x.shape[0], generator=self.gen, device=self.x.device)
        self.consumed += 1
        return self.x[self.perm[i * self.batch_size : (i + 1) * self.batch_size]]


def decode_latents(
    model: Any, n: int, latent_dim: int, decode: Callable, *, seed: int, device, batch_size: int
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


def check_budget(steps, epochs, per_epoch: int, batches_per_step: int = 1) -> int:
    """Total optimiser steps for a budget given as steps or as epochs of the training data.

    `per_epoch` is the number of batches in one pass; a step that consumes `batches_per_step`
    of them (a GAN's D updates) makes an epoch that many times shorter.

    >>> check_budget(None, 2.0, 17), check_budget(None, 2.0, 17, batches_per_step=2)
    (34, 17)
    """
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
    return max(1, math.ceil(epochs * per_epoch / batches_per_step - 1e-9))


M = TypeVar("M", bound=torch.nn.Module)


def seeded_build(seed: int, make: Callable[[], M], dev: torch.device) -> M:
    """`make()` under `seed` without touching the global RNG state, moved to `dev`."""
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = make()
    return model.to(dev)


def fixed_subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The same `n` rows of `x` every call: the slice the loss curves are measured on."""
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx.to(x.device)]


REDUCTIONS = ("mean", "max")


@dataclass
class Loop:
    """One training run as the one loop runs it.

    `step(i)` does optimiser step i (from 1) and returns a 1-d tensor of `signals` (main loss
    first); `measure()` returns (train_loss, val_loss) on fixed slices; `model` is what the
    callback receives and `Family.sample` takes. The first nine fields are the loop itself; the
    rest say how to read its signals and what the result holds, and a family sets those it needs.
    """

    step: Callable[[int], torch.Tensor]
    measure: Callable[[], tuple[float, float]]
    signals: tuple[str, ...]
    model: Any
    total: int
    log_every: int | None = None  # None: default_log_every(total)
    callback: Callback | None = None
    max_seconds: float | None = None
    t0: float = field(default_factory=time.perf_counter)
    # How a log window reduces a signal: "mean" unless named here. "max" suits a gradient norm,
    # where one exploding step matters even when its neighbours are calm.
    reduce: Mapping[str, str] = field(default_factory=dict)
    # The signals whose non-finite value, or |value| > diverge_limit, stops the run; None: all.
    diverge_on: tuple[str, ...] | None = None
    diverge_limit: float = DIVERGED_LOSS
    # result.losses as {name: signal}; None: every signal under its own name.
    losses: Mapping[str, str] | None = None
    epochs: Callable[[], float] | None = None  # passes over the training data so far
    config: Any = None
    seed: int = 0
    device: str = "cpu"
    extras: dict[str, Any] = field(default_factory=dict)  # kept in result.extras
    result: type[TrainResult] = TrainResult  # a family may add accessors in a subclass


def default_log_every(total: int) -> int:
    """About 20 evaluations a run, and none closer than 25 steps apart."""
    return max(25, total // 20)


def _columns(loop: Loop, names, what: str) -> list[int]:
    unknown = [n for n in names if n not in loop.signals]
    if unknown:
        raise GentuneError(
            f"Loop.{what} names signals the step does not return",
            value=unknown,
            fix=f"use names from {', '.join(loop.signals)}",
        )
    return [loop.signals.index(n) for n in names]


def run_loop(loop: Loop) -> tuple[dict, list[dict], list[dict], int, str]:
    """Run it: (final losses, history, curves, steps done, stop reason).

    Every `log_every` steps (and at the last step) the signals since the last log are reduced
    (`loop.reduce`: mean, or max), the train and validation losses measured, and all of it
    handed to the callback, which may raise (e.g. optuna.TrialPruned) to stop. A non-finite or
    exploded signal among `loop.diverge_on` stops with "diverged". The final losses are the
    means over the last FINAL_LOSS_WINDOW steps of the signals up to the last one `loop.losses`
    reports.
    """
    from gentune.device import flush_denormals

    flush_denormals()
    every = default_log_every(loop.total) if loop.log_every is None else loop.log_every
    if not _is_int(every) or every < 1:
        raise GentuneError("log_every must be an integer >= 1", value=every, fix="pass 50")
    bad = {k: v for k, v in loop.reduce.items() if v not in REDUCTIONS}
    if bad:
        raise GentuneError("Loop.reduce takes mean or max per signal", value=bad, fix="use mean or max")
    maxed = _columns(loop, [k for k, v in loop.reduce.items() if v == "max"], "reduce")
    watched = _columns(loop, loop.signals if loop.diverge_on is None else loop.diverge_on, "diverge_on")
    reported = _columns(loop, loop.signals if loop.losses is None else list(loop.losses.values()), "losses")
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
        # NaN fails the comparison too.
        if not bool((window[:, watched].abs() <= loop.diverge_limit).all()):
            stop = "diverged"
        signals = dict(zip(loop.signals, window.mean(0).tolist()))
        for i in maxed:
            signals[loop.signals[i]] = float(window[:, i].max())
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
    # Only the columns up to the last reported loss are averaged: a reduction over another
    # width may round differently, and the GANs' losses must stay what their own loop gave.
    width = 1 + max(reported)
    final = record[max(0, step - FINAL_LOSS_WINDOW) : step, :width].mean(0).tolist()  # type: ignore[index]
    return dict(zip(loop.signals, final)), history, curves.points, step, stop


def fit(
    loop: Loop,
    *,
    callback: Callback | None = None,
    max_seconds: float | None = None,
    log_every: int | None = None,
    t0: float | None = None,
) -> TrainResult:
    """Run `loop` and gather what it produced into `loop.result`; the model ends in eval mode.

    The keywords are the caller's part of the loop, so that a family builds its `Loop` and the
    caller decides how it is watched: its callback, time limit, log schedule and start time
    (each None: the loop's own).
    """
    loop = replace(
        loop,
        callback=loop.callback if callback is None else callback,
        max_seconds=loop.max_seconds if max_seconds is None else max_seconds,
        log_every=loop.log_every if log_every is None else log_every,
        t0=loop.t0 if t0 is None else t0,
    )
    final, history, curves, done, stop = run_loop(loop)
    loop.model.eval()
    losses = final if loop.losses is None else {name: final[s] for name, s in loop.losses.items()}
    return loop.result(
        model=loop.model,
        config=loop.config,
        losses=losses,
        curves=curves,
        history=history,
        steps=done,
        epochs=loop.epochs() if loop.epochs is not None else 0.0,
        seconds=time.perf_counter() - loop.t0,
        device=loop.device,
        seed=loop.seed,
        diverged=stop == "diverged",
        stop_reason=stop,
        extras=loop.extras,
    )
