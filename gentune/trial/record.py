"""`gentune.Recorder`: what a built-in trial records, from a user's own Optuna objective.

A user who trains in their own loop keeps it, and adds a few lines:

    def objective(trial):
        rec = gentune.Recorder(trial, dataset="digits", steps=2000)
        for step in range(1, 2001):
            ...                                   # the user's own training step
            if step % 500 == 0:
                rec.report(step, sample)          # score, report to the pruner, run the detectors
        return rec.finish(sample)                 # the final metric, stored as a built-in trial's

`sample(n, seed)` draws n images from the user's generator with its latent noise seeded by
`seed`, as floats in [0, 1] or uint8 (gentune.score's rule). The Recorder draws from the same
fixed seed as built-in trials, scores with the same Evaluator (N, floor, cached extractor),
reports through the same TrainingMonitor and failure detectors, and stores the same keys
(metrics, samples_png, samples_progress, prune_reason; the study's floor), so `gentune report`
and `gentune best` read the study as they read a built-in one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from gentune.images import b64, grid_png
from gentune.metrics.evaluator import Evaluator
from gentune.metrics.score import study_evaluator, to_model_range
from gentune.trial.artifacts import ARTIFACTS_ENV, GridUploader, artifact_dir
from gentune.trial.attrs import StudyKey, TrialKey, store_metrics
from gentune.trial.detectors import DetectorConfig, DetectorSet
from gentune.trial.monitor import Schedule, TrainingMonitor, eval_n, incumbent
from gentune.trial.objective import EVAL_SEED, store_grid

Samples = Callable[[int, int], Any] | torch.Tensor | np.ndarray


class Recorder:
    """Score, report and store one trial of a user's own training loop (see the module docstring).

    Args:
        trial: the optuna.Trial the objective was handed.
        dataset, data_dir: the real images to score against, as in `gentune.score`.
        steps: the steps the loop trains: the detectors that wait for part of training
            (mode collapse) start after their share of it; None: they start at once.
        metric: the objective: "fid" or "kid" (lower is better), "precision" or "recall".
        n: samples per final score (None: the study default, 1000 on digits); `eval_n`:
            per `report` (None: min(n, 1000)), as `gentune tune --n-eval / --eval-samples`.
        detectors: a DetectorConfig, True (the defaults) or False (none).
        prune: ask the study's pruner after each report. A multi-objective study takes no
            intermediate values, so there the reports are only watched by the detectors, and
            `finish` returns the value of `metric` to return among the objective's values.
        seed: as the study's --seed for its Evaluator (the floor's real images, KID subsets).
        artifacts: the study's output folder (runs/<study>): the grids also go to its
            artifacts/ store (or to $GENTUNE_ARTIFACTS when set), for optuna-dashboard;
            None: only to $GENTUNE_ARTIFACTS, when set.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        dataset: str = "digits",
        *,
        steps: int | None = None,
        metric: str = "fid",
        n: int | None = None,
        eval_n: int | None = None,
        data_dir: str | Path | None = None,
        device: str = "auto",
        detectors: DetectorConfig | bool = True,
        prune: bool = True,
        seed: int = 0,
        artifacts: str | Path | None = None,
    ):
        self.trial, self.dataset, self.steps, self.metric = trial, dataset, steps, metric
        self.n, self.eval_n, self.data_dir, self.device = n, eval_n, data_dir, device
        self.detectors, self.prune, self.seed = detectors, prune, seed
        # $GENTUNE_ARTIFACTS, when set, wins over `artifacts`, as it does for built-in trials.
        wanted = artifacts is not None or bool(os.environ.get(ARTIFACTS_ENV))
        self._grids = GridUploader(artifact_dir(artifacts or ".")) if wanted else None
        self._monitor: TrainingMonitor | None = None
        self._last_step = 0

    def report(self, step: int, sample: Samples, losses: dict[str, float] | None = None) -> float:
        """Score `sample`'s images at `step`, report the value to the pruner and keep the grid;
        stop the trial (optuna.TrialPruned, with its prune_reason) when the pruner or a
        detector says so.

        Args:
            step: the training step, increasing from call to call.
            sample: `sample(n, seed)` -> images (drawn from the fixed evaluation seed), or the
                images themselves.
            losses: training signals for the detectors that read them: `g_loss`, `d_loss`,
                `d_acc` (D's accuracy), `grad_norm`, `kl`.

        Returns:
            The objective's value at this step.
        """
        monitor = self._prepared()
        total = self.steps or step + 1
        if losses:
            reason = monitor.detectors.on_signals(step, total, {k: float(v) for k, v in losses.items()})
            if reason:
                monitor.stop(reason, step)
        images = self._draw(sample, monitor.schedule.n, step)
        value, metrics = monitor.evaluate(step, images=images)
        reason = monitor.detectors.on_evaluation(step, total, metrics, value)
        if reason:
            monitor.stop(reason, step)
        if monitor.prune and self.trial.should_prune():
            monitor.stop("pruned", step)
        self._last_step = step
        return value

    def finish(self, sample: Samples, step: int | None = None) -> float:
        """Score the final model: store the metrics, the fixed-seed grid and the steps, and
        return the objective's value (what the objective returns to Optuna).

        Args:
            sample: as for `report`; N = `n` images are drawn.
            step: the final step (None: `steps`, else one past the last report).
        """
        monitor = self._prepared()
        evaluator = self._evaluator(self.n)
        step = step if step is not None else self.steps or self._last_step + 1
        images = self._draw(sample, evaluator.info["n"], step)
        store_grid(self.trial, images, self._grids)
        metrics = monitor.final_metrics(step, images, evaluator)
        store_metrics(self.trial, metrics)
        self.trial.set_user_attr(TrialKey.STEPS, int(step))
        return float(metrics[self.metric])

    # -- internals ---------------------------------------------------------------------------

    def _evaluator(self, n: int | None) -> Evaluator:
        return study_evaluator(self.dataset, n=n, data_dir=self.data_dir, device=self.device, seed=self.seed)

    def _prepared(self) -> TrainingMonitor:
        """The trial's monitor, made on first use; stores the study's floor once."""
        if self._monitor is not None:
            return self._monitor
        final = self._evaluator(self.n)
        store_reference(self.trial.study, final)
        at = eval_n(self.eval_n, final.info["n"])
        evaluator = final if at == final.info["n"] else self._evaluator(at)
        config = self.detectors
        if not isinstance(config, DetectorConfig):
            config = DetectorConfig() if config else DetectorConfig().only([])
        study = self.trial.study
        # A multi-objective study takes no intermediate values: its metric is only watched.
        single = len(study.directions) == 1
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        direction = "maximize" if maximize else "minimize"
        detectors = DetectorSet(
            config, floor=final.floor, direction=direction, incumbent=lambda: incumbent(study)
        )
        self._monitor = TrainingMonitor(
            self.trial,
            schedule=Schedule(evals=0, n=at),
            detectors=detectors,
            sample=lambda model, n, seed: model(n, seed),  # unused: report hands it images
            evaluator=evaluator,
            metric=self.metric,
            seed=EVAL_SEED,
            prune=self.prune and single,
            report=single,
            grids=self._grids,
        )
        return self._monitor

    def _draw(self, sample: Samples, n: int, step: int) -> torch.Tensor:
        """n images in [-1, 1] from `sample`; a diverged generator (NaN or infinite pixels)
        ends the trial as PRUNED with prune_reason diverged, as a built-in trial's does."""
        raw = sample(n, EVAL_SEED) if callable(sample) else sample
        if not _finite(raw):
            self._prepared().stop("diverged", step)
        shape = self._evaluator(self.n).dataset.shape
        return to_model_range(raw, shape)[:n]


def _finite(raw: Any) -> bool:
    """False for float pixels that hold NaN or an infinity; other inputs are gentune.score's to judge."""
    if isinstance(raw, torch.Tensor) and raw.is_floating_point():
        return bool(torch.isfinite(raw).all())
    if isinstance(raw, np.ndarray) and raw.dtype.kind == "f":
        return bool(np.isfinite(raw).all())
    return True


def store_reference(study: optuna.Study, evaluator: Evaluator) -> None:
    """Store in `study`, once, what its report reads beside the trials' metrics: the floor, the
    extractor's info and a grid of the real reference images."""
    if StudyKey.FLOOR in study.user_attrs:
        return
    study.set_user_attr(StudyKey.FLOOR, evaluator.floor)
    study.set_user_attr(StudyKey.EXTRACTOR, evaluator.info)
    real = evaluator.dataset.split(evaluator.info.get("reference", "val")).x
    study.set_user_attr(StudyKey.REAL_PNG, b64(grid_png(real[:64])))
