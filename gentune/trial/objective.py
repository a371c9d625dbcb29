"""The objective of a built-in study: train one configuration, score what it generates.

One call = one trial: the search space turns the trial into a frozen config, the family's
trainer trains it for the study's budget, and the metric scores generated samples against
held-out real data. Everything a report needs goes into the trial's user attributes
(docs/storage.md); the generator and a sample grid are also written under runs/<study>/trials/.
While it trains, a TrainingMonitor (gentune.trial.monitor) evaluates on the study's schedule, reports
to the pruner and runs the failure detectors; a trial they stop is PRUNED with a prune_reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import TrialState

from gentune.data.base import ImageDataset
from gentune.families import Family, data_kind
from gentune.images import b64, grid_png
from gentune.metrics import Evaluator
from gentune.search.space import SearchSpace
from gentune.train.loop import overfit_step, overfitting

if TYPE_CHECKING:  # settings sits above trial/; only its type is needed here
    from gentune.settings import StudySettings
from gentune.trial.artifacts import FINAL_NAME, GridUploader, artifact_dir
from gentune.trial.attrs import TrialKey, store_metrics
from gentune.trial.detectors import DetectorConfig, DetectorSet
from gentune.trial.monitor import Schedule, TrainingMonitor, eval_n, incumbent

# Every trial draws its evaluation samples from the same latent seed, so sample grids and
# metric values are comparable across trials.
EVAL_SEED = 12345
GRID_SAMPLES = 64
TEXT_SAMPLES = 4  # strings kept in a text trial's `text_samples`


Value = float | tuple[float, ...]  # one objective's value, or one per objective of a multi-objective study


def objective_value(
    settings: StudySettings, metrics: dict[str, Any], loss: float, seconds: float | None = None
) -> Value:
    """The trial's value: a metric, or with --objective loss the family's main training loss;
    a multi-objective study's values in its objectives' order ("seconds": the training time)."""
    own: dict[str, Any] = {"loss": loss, "seconds": seconds}
    values = tuple(float(own[o] if o in own else metrics[o]) for o in settings.objectives)
    return values[0] if len(values) == 1 else values


def best_of(study: optuna.Study, index: int, direction: str) -> float | None:
    """The best value of objective `index` among a multi-objective study's complete trials
    (None: none yet): what the detectors that wait for a better trial compare with, since such
    a study stores no intermediate values."""
    done = [t.values[index] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        return None
    return min(done) if direction == "minimize" else max(done)


def store_grid(trial: optuna.Trial, images: torch.Tensor, grids: GridUploader | None = None) -> bytes:
    """Store the trial's final grid, its first GRID_SAMPLES `images` (N, C, H, W) in [-1, 1],
    as a built-in trial and gentune.Recorder keep it (and upload it to `grids`); returns the PNG."""
    png = grid_png(images[:GRID_SAMPLES])
    if grids is not None:
        grids.upload(trial, png, FINAL_NAME)
    trial.set_user_attr(TrialKey.SAMPLES_PNG, b64(png))
    return png


class GenerativeObjective:
    """Callable(trial) -> objective value, for one study in one process.

    The evaluator (feature extractor, reference statistics, floor) is prepared once by the
    caller and shared by every trial.
    """

    def __init__(
        self,
        family: Family,
        settings: StudySettings,
        data: ImageDataset,
        evaluator,
        space: SearchSpace,
        *,
        device: torch.device,
        out_dir: Path,
        progress=None,
    ):
        self.family, self.settings, self.data = family, settings, data
        self.evaluator, self.space, self.device = evaluator, space, device
        self.out_dir, self.progress = out_dir, progress
        self.grids = GridUploader(artifact_dir(out_dir))  # for optuna-dashboard
        self.n = evaluator.info["n"] if evaluator is not None else 0  # text: no sample metric
        self.kind = data_kind(data)
        self._eval_evaluator: Evaluator | None = None

    def monitor(self, trial: optuna.Trial, family: Family | None = None) -> TrainingMonitor:
        """The trainer callback of `trial`: progress, evaluations, pruning and detectors."""
        s, family = self.settings, family or self.family
        metric, direction = s.watched
        single = len(s.objectives) == 1
        schedule = Schedule(evals=s.evals, every=s.eval_every, n=eval_n(s.eval_samples, self.n))
        if self.evaluator is None and metric != "nll":
            schedule = Schedule(evals=0)  # no metric to watch during training
        config = (
            DetectorConfig.from_dict(s.detectors) if s.detectors is not None else DetectorConfig().only([])
        )
        detectors = DetectorSet(
            config,
            floor=self.evaluator.floor if self.evaluator else None,
            direction=direction,
            incumbent=(
                (lambda: incumbent(trial.study))
                if single
                else lambda: best_of(trial.study, s.objectives.index(metric), direction)
            ),
        )

        def sample(model, n: int, seed: int):
            return family.sample(model, n, seed=seed, device=str(self.device))

        # With --objective nll the monitor reports the trainer's validation loss: no samples.
        evaluator = None if metric == "nll" else self._progress_evaluator(schedule.n)
        return TrainingMonitor(
            trial,
            schedule=schedule,
            detectors=detectors,
            sample=sample,
            evaluator=evaluator,
            metric=metric,
            seed=EVAL_SEED,
            progress=self.progress,
            prune=s.pruner != "none" and single,
            report=single,
            grids=self.grids,
        )

    def _progress_evaluator(self, n: int):
        """The evaluator at N = n for evaluations during training (the main one when n matches)."""
        if n == self.n or self.evaluator is None:
            return self.evaluator
        if self._eval_evaluator is None:
            ev = self.evaluator
            self._eval_evaluator = Evaluator(
                ev.dataset,
                n=n,
                reference=ev.reference,
                device=ev.device,
                cache_dir=ev.cache_dir,
                seed=ev.seed,
            ).prepare()
        return self._eval_evaluator

    def make_config(self, params: dict[str, Any]):
        return self.family.config_cls.from_dict(params)

    def begin(self, trial: optuna.Trial) -> tuple[Family, Any, int]:
        """(family, config, training seed) of `trial`, stored in its attributes; progress told."""
        # A queued re-run (--confirm) brings its whole config; other trials sample the space.
        fixed = trial.user_attrs.get(TrialKey.FIXED_CONFIG)
        if fixed is not None:
            family, params = self.family.member(trial.user_attrs.get(TrialKey.FIXED_FAMILY)), dict(fixed)
        else:  # --model auto: the family this trial drew
            family, params = self.family.pick(self.space.suggest(trial))
        config = family.config_cls.from_dict(params)
        # --confirm re-runs a configuration under other training seeds (gentune.phases.stages).
        seed = int(trial.user_attrs.get(TrialKey.TRAIN_SEED, self.settings.seed))
        trial.set_user_attr(TrialKey.CONFIG, config.to_dict())
        trial.set_user_attr(TrialKey.SEED, seed)
        trial.set_user_attr(TrialKey.DEVICE, str(self.device))
        trial.set_user_attr(TrialKey.FAMILY, family.name)
        if self.progress is not None:
            self.progress.trial_started(trial.number, trial.params)
        return family, config, seed

    def __call__(self, trial: optuna.Trial) -> Value:
        family, config, seed = self.begin(trial)
        budget = self.settings.budget_for(family)
        monitor = self.monitor(trial, family)
        cap: dict[str, Any] = (
            {"max_seconds": self.settings.trial_seconds} if self.settings.trial_seconds else {}
        )
        result = family.train(
            config,
            self.data,
            **budget,
            **cap,
            seed=seed,
            device=str(self.device),
            callback=self._watch(trial, monitor),
        )
        return self.score(trial, family, config, result, monitor, seed)

    def score(
        self,
        trial: optuna.Trial,
        family: Family,
        config,
        result,
        monitor: TrainingMonitor,
        seed: int,
        *,
        images: torch.Tensor | None = None,
        metrics: dict | None = None,
    ) -> Value:
        """Store what `result` (a TrainResult) trained and score its model: the trial's value.

        `images` and `metrics` are the final N samples and their metrics when the caller drew
        and scored them already (a population scores its members in one batched pass).
        """
        trial.set_user_attr(TrialKey.FINAL_LOSS, {k: _finite(v) for k, v in result.losses.items()})
        trial.set_user_attr(TrialKey.TRAIN_SECONDS, result.seconds)
        trial.set_user_attr(TrialKey.STEPS, result.steps)
        trial.set_user_attr(TrialKey.STOP_REASON, result.stop_reason)  # budget, max_seconds or diverged
        trial.set_user_attr(TrialKey.LOSS_CURVES, result.curves)
        # Flagged when, at some evaluation, validation had risen P times while training fell.
        flagged_at = overfit_step(result.curves)
        trial.set_user_attr(TrialKey.OVERFITTING, flagged_at is not None)
        if flagged_at is not None:
            trial.set_user_attr(TrialKey.OVERFITTING_STEP, flagged_at)
        loss = result.losses[family.main_loss]
        if self.kind == "text":
            return self._score_text(trial, family, config, result, seed, loss)
        if images is None:
            images = family.sample(result.model, self.n, seed=EVAL_SEED, device=str(self.device))
        png = store_grid(trial, images, self.grids)
        if result.diverged or not torch.isfinite(images).all():
            trial.set_user_attr(TrialKey.PRUNE_REASON, "diverged")
            raise optuna.TrialPruned("diverged: the training loss became non-finite")
        if metrics is None:
            metrics = monitor.final_metrics(result.steps, images, self.evaluator)
        # Likelihood families add their held-out NLL / ELBO (the --objective nll value).
        metrics = {**metrics, **family.evaluate(result.model, self.data, device=str(self.device))}
        store_metrics(trial, metrics)
        self._save(trial.number, family, config, result, metrics, seed, png=png)
        return objective_value(self.settings, metrics, loss, result.seconds)

    def _watch(self, trial: optuna.Trial, monitor: TrainingMonitor):
        """The monitor, plus the overfitting check on the train/validation losses it is handed."""
        points: list[dict] = []

        def callback(step: int, total: int, signals: dict, model=None) -> None:
            monitor(step, total, signals, model)
            if "val_loss" not in signals:
                return
            points.append({"train": signals["train_loss"], "val": signals["val_loss"]})
            if self.settings.prune_overfitting and overfitting(points):
                trial.set_user_attr(TrialKey.OVERFITTING, True)
                monitor.stop("overfitting")

        return callback

    def _score_text(self, trial, family: Family, config, result, seed: int, loss: float) -> Value:
        """A text model's score: its validation NLL (no sample metric applies), plus samples."""
        if result.diverged:
            trial.set_user_attr(TrialKey.PRUNE_REASON, "diverged")
            raise optuna.TrialPruned("diverged: the training loss became non-finite")
        metrics = family.evaluate(result.model, self.data, device=str(self.device))
        store_metrics(trial, metrics)
        texts = family.sample(result.model, TEXT_SAMPLES, seed=EVAL_SEED, device=str(self.device))
        trial.set_user_attr(TrialKey.TEXT_SAMPLES, texts)
        self._save(trial.number, family, config, result, metrics, seed, texts=texts)
        return objective_value(self.settings, metrics, loss, result.seconds)

    def _save(
        self,
        number: int,
        family: Family,
        config,
        result,
        metrics: dict,
        seed: int,
        *,
        png: bytes | None = None,
        texts: list[str] | None = None,
    ) -> None:
        folder = self.out_dir / "trials" / str(number)
        folder.mkdir(parents=True, exist_ok=True)
        if png is not None:
            (folder / "samples.png").write_bytes(png)
        if texts is not None:
            (folder / "samples.txt").write_text("\n\n---\n\n".join(texts))
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        family.save(
            folder / "generator.pt",
            config,
            result.model,
            extra={"seed": seed, "budget": self.settings.budget_for(family)},
        )


def _finite(x: float) -> float | None:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None
