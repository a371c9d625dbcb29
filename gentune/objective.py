"""The objective of a built-in study: train one configuration, score what it generates.

One call = one trial: the search space turns the trial into a frozen config, the family's
trainer trains it for the study's budget, and the metric scores generated samples against
held-out real data. Everything a report needs goes into the trial's user attributes
(docs/storage.md); the generator and a sample grid are also written under runs/<study>/trials/.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from .data.base import ImageDataset
from .families import Family
from .images import b64, grid_png
from .search.space import SearchSpace
from .study import StudySettings

# Every trial draws its evaluation samples from the same latent seed, so sample grids and
# metric values are comparable across trials.
EVAL_SEED = 12345
GRID_SAMPLES = 64
LOSS_WARNING = ("--objective loss ranks trials by the final generator loss, which does not measure "
                "sample quality: on the tutorial's GAN the lowest-loss configurations are often "
                "mode-collapsed. Use --objective fid (the default) to tune what the model generates.")


def objective_value(settings: StudySettings, metrics: dict[str, Any], g_loss: float) -> float:
    if settings.objective == "loss":
        return float(g_loss)
    return float(metrics[settings.objective])


class GenerativeObjective:
    """Callable(trial) -> objective value, for one study in one process.

    The evaluator (feature extractor, reference statistics, floor) is prepared once by the
    caller and shared by every trial.
    """

    def __init__(self, family: Family, settings: StudySettings, data: ImageDataset, evaluator,
                 space: SearchSpace, *, device: torch.device, out_dir: Path, progress=None):
        self.family, self.settings, self.data = family, settings, data
        self.evaluator, self.space, self.device = evaluator, space, device
        self.out_dir, self.progress = out_dir, progress
        self.n = evaluator.info["n"]

    def make_config(self, params: dict[str, Any]):
        return self.family.config_cls.from_dict(params)

    def __call__(self, trial: optuna.Trial) -> float:
        params = self.space.suggest(trial)
        config = self.make_config(params)
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("seed", self.settings.seed)
        trial.set_user_attr("device", str(self.device))
        if self.progress is not None:
            self.progress.trial_started(trial.number, trial.params)
        budget = self.settings.budget()
        callback = (lambda step, total, losses: self.progress.step(step, total)) if self.progress else None
        result = self.family.train(config, self.data, **budget, seed=self.settings.seed,
                                   device=str(self.device), callback=callback)
        trial.set_user_attr("final_loss", {"g": _finite(result.g_loss), "d": _finite(result.d_loss)})
        trial.set_user_attr("train_seconds", result.seconds)
        trial.set_user_attr("steps", result.steps)
        images = self.family.sample(result.generator, self.n, seed=EVAL_SEED,
                                    device=str(self.device))
        png = grid_png(images[:GRID_SAMPLES])
        trial.set_user_attr("samples_png", b64(png))
        if result.diverged or not torch.isfinite(images).all():
            trial.set_user_attr("prune_reason", "diverged")
            raise optuna.TrialPruned("diverged: the training loss became non-finite")
        metrics = self.evaluator.evaluate(images)
        trial.set_user_attr("metrics", metrics)
        self._save(trial.number, config, result, png, metrics)
        return objective_value(self.settings, metrics, result.g_loss)

    def _save(self, number: int, config, result, png: bytes, metrics: dict) -> None:
        from .train.checkpoint import save_checkpoint

        folder = self.out_dir / "trials" / str(number)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "samples.png").write_bytes(png)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        save_checkpoint(folder / "generator.pt", config, result.generator, self.data.shape,
                        extra={"seed": self.settings.seed, "budget": self.settings.budget()})


def _finite(x: float) -> float | None:
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


def warn_if_loss(settings: StudySettings) -> None:
    if settings.objective == "loss":
        warnings.warn(LOSS_WARNING, UserWarning, stacklevel=2)
