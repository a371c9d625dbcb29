"""Watch one trial while it trains: evaluate on a schedule, report, prune, detect failures.

A TrainingMonitor is the trainer callback of one trial (the contract of gentune.train.callback:
`(step, total, signals, model)`), so any family whose trainer calls it gets the same treatment:

- every log window, the failure detectors read the training signals (divergence, D
  overpowering, VAE posterior collapse);
- every `every` G steps, it draws `n` samples from fixed latent seeds (the same in every trial,
  so values at one step compare across trials), scores them, reports the objective with
  `trial.report(value, step)`, stores the sample grid in `samples_progress` (and as an Optuna
  artifact, gentune.trial.artifacts), runs the
  sample-based detectors (mode collapse, stagnation), then asks the pruner. With the `nll`
  objective (likelihood families; text) the value reported is the trainer's validation loss
  in the same units instead, and no samples are drawn.

A stop sets the trial's `prune_reason` and raises optuna.TrialPruned: the trial is PRUNED, not
failed, so samplers still learn from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from gentune.images import b64, grid_png
from gentune.trial.artifacts import GridUploader, step_name
from gentune.trial.attrs import TrialKey
from gentune.trial.detectors import DetectorSet

PROGRESS_GRID = 64  # samples per grid in samples_progress (the first of the evaluation batch)
MAX_EVAL_N = 1000  # default N during training: cheap, and above the 64 features FID needs


@dataclass(frozen=True)
class Schedule:
    """When and how to evaluate during training. `every` None: `total / evals` of the trial."""

    evals: int = 0  # evaluations per trial before the final one; 0: none
    every: int | None = None  # or a fixed number of G steps between evaluations
    n: int = MAX_EVAL_N

    def interval(self, total: int) -> int | None:
        if self.every:
            return self.every
        if self.evals <= 0:
            return None
        return max(1, math.ceil(total / (self.evals + 1)))


def eval_n(n_eval: int | None, final_n: int) -> int:
    """N of the evaluations during training: the setting, or min(final N, 1000); never above
    the final N, since the final evaluation also scores its first N samples for the curve."""
    return min(int(n_eval), final_n) if n_eval else min(final_n, MAX_EVAL_N)


class TrainingMonitor:
    """The trainer callback of one trial; see the module docstring.

    `sample(model, n, seed)` draws n images in [-1, 1]; `evaluator.evaluate(images)` scores
    them; `metric` names the objective's key in the metrics ("loss" reports the G loss).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        schedule: Schedule,
        detectors: DetectorSet,
        sample: Callable[[Any, int, int], torch.Tensor],
        evaluator,
        metric: str,
        seed: int,
        progress=None,
        prune: bool = True,
        grids: GridUploader | None = None,
        report: bool = True,
    ):
        self.trial, self.schedule, self.detectors = trial, schedule, detectors
        self.sample, self.evaluator, self.metric = sample, evaluator, metric
        self.seed, self.progress, self.prune = seed, progress, prune
        self.grids = grids  # where each evaluation's grid also goes, as an Optuna artifact
        # Optuna refuses trial.report in a multi-objective study: values are then only watched.
        self.report = report
        self.frames: list[dict] = []
        # The steps the detectors' "after a fraction of the budget" rules count against; None:
        # the trial's own total. A promotion rung shorter than the study's steps sets the
        # study's, so a young trial is judged as young (mode collapse is normal at step 200).
        self.horizon: int | None = None
        self._next: int | None = None
        self._last_signals: dict = {}
        self._step = 0

    def __call__(self, step: int, total: int, signals: dict, model=None) -> None:
        if self.progress is not None:
            self.progress.step(step, total)
        self._last_signals, self._step = signals, step
        horizon = max(total, self.horizon or 0)
        reason = self.detectors.on_signals(step, horizon, signals)
        if reason:
            self.stop(reason, step)
        interval = self.schedule.interval(total)
        if model is None or interval is None or step >= total:
            return  # the objective scores the final model itself
        if self._next is None:
            self._next = interval
        if step < self._next:
            return
        self._next = (step // interval + 1) * interval
        value, metrics = self.evaluate(step, model)
        if self.progress is not None:
            self.progress.evaluated(step, value)
        reason = self.detectors.on_evaluation(step, horizon, metrics, value)
        if reason:
            self.stop(reason, step)
        if self.prune and self.trial.should_prune():
            self.stop("pruned", step)

    def evaluate(
        self, step: int, model=None, images: torch.Tensor | None = None, full: bool = False
    ) -> tuple[float, dict]:
        """Score `model`'s samples (or the first n of `images`), report, keep the grid.

        Only the metrics that the objective and the detectors read are computed, unless `full`.
        """
        if self.metric == "nll":  # the validation loss the trainer just measured
            value = float(self._last_signals.get("val_loss", math.nan))
            if self.report:
                self.trial.report(value, step)
            return value, {}
        if images is None:
            images = self.sample(model, self.schedule.n, self.seed)
        images = images[: self.schedule.n]
        png = grid_png(images[:PROGRESS_GRID])
        self.frames.append({"step": int(step), "png": b64(png)})
        if self.grids is not None:
            self.grids.upload(self.trial, png, step_name(step))
        self.trial.set_user_attr(TrialKey.SAMPLES_PROGRESS, self.frames)
        if not torch.isfinite(images).all():
            self.stop("diverged", step)
        keys = None if full else {self.metric, *self.detectors.metrics()}
        metrics = self.evaluator.evaluate(images, keys=keys)
        if self.metric == "loss":
            # The GANs' G loss, else another family's main loss (gentune.families).
            value = float(self._last_signals.get("g_loss", self._last_signals.get("loss", math.nan)))
        else:
            value = float(metrics[self.metric])
        if self.report:
            self.trial.report(value, step)
        return value, metrics

    def final_metrics(self, step: int, images: torch.Tensor, evaluator: Any) -> dict:
        """The final model's metrics, from `evaluator` (the study's final N) on `images`. When
        the trial evaluated during training, its learning curve ends at the final step too; at
        the same N (this monitor's evaluator is `evaluator`) that one evaluation serves both."""
        if self.frames:
            same = self.evaluator is evaluator
            _, at_n = self.evaluate(step, images=images, full=same)
            if same:
                return at_n
        return evaluator.evaluate(images)

    def stop(self, reason: str, step: int | None = None) -> None:
        """Mark the trial stopped for `reason` at `step` (default: the last step seen) and end
        it as PRUNED."""
        self.trial.set_user_attr(TrialKey.PRUNE_REASON, reason)
        self.trial.set_user_attr(TrialKey.STEPS, int(self._step if step is None else step))
        by = "the pruner" if reason == "pruned" else "a failure detector"
        raise optuna.TrialPruned(f"{reason}: stopped by {by}")


def incumbent(study: optuna.Study) -> float | None:
    """The best complete trial's value as measured during training (its last report, at the
    same N as the evaluations), or its final value when it reported none; None if none is
    complete."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    values = best.intermediate_values
    return values[max(values)] if values else best.value
