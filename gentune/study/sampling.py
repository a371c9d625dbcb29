"""Samples from a trial's generator: load its checkpoint, or retrain it and keep one.

A trial without a checkpoint here (tuned on another machine, or its folder deleted) is trained
again as it was trained: its config, its own seed (a `--confirm` re-run trains under another
seed than the study's), the study's budget for its family and the study's time cap per trial.
Training is deterministic for a seed, so the same model comes back, except after a time cap:
where a trial stopped then depends on the machine's speed, and the retrain says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError
from gentune.settings import DATA_SEED, StudySettings
from gentune.study.store import builtin_settings, open_or_create
from gentune.trial import attrs


@dataclass(frozen=True)
class Retrained:
    """A trial trained again: what went in, and the trainer's result."""

    config: Any
    seed: int
    budget: dict[str, Any]
    result: Any  # the family's training result: .model, .losses, .steps, .stop_reason

    def note(self, trial: FrozenTrial, cap: float | None) -> str:
        """Why the retrained model may differ from the trial's, or ''."""
        stopped_at = attrs.steps(trial)
        capped = "max_seconds" in (self.result.stop_reason, attrs.stop_reason(trial))
        if not capped or stopped_at is None or stopped_at == self.result.steps:
            return ""
        return (
            f"; the {cap:g} s cap per trial stopped it at step {self.result.steps}, the trial at step "
            f"{stopped_at}: where a time cap stops depends on the machine"
        )


def trial_seed(trial: FrozenTrial, study_seed: int) -> int:
    """The seed `trial` trained with: its `seed` record, else the seed it was queued with,
    else the study's."""
    recorded = attrs.seed(trial)
    return recorded if recorded is not None else attrs.train_seed(trial, default=study_seed)


def retrain(settings: StudySettings, family, trial: FrozenTrial, *, device: str) -> Retrained:
    """Train `trial`'s config again as the study trained it (see the module docstring)."""
    from gentune.data import load_dataset

    config = attrs.config(trial)
    if config is None:
        raise GentuneError(
            f"trial {trial.number} has no stored config to retrain", fix="choose another trial with --trial"
        )
    data = load_dataset(settings.dataset_ref.name, seed=DATA_SEED)
    seed = trial_seed(trial, settings.seed)
    budget = settings.budget_for(family)
    cap = {"max_seconds": settings.trial_seconds} if settings.trial_seconds else {}
    cfg = family.config_cls.from_dict(config)
    result = family.train(cfg, data, **budget, **cap, seed=seed, device=device)
    return Retrained(config=cfg, seed=seed, budget=budget, result=result)


def sample_trial(
    study_name: str,
    *,
    trial: int | None,
    n: int,
    output: Path,
    seed: int,
    storage: str,
    runs_dir: Path,
    device: str = "auto",
) -> tuple[Path, str]:
    """Write `n` samples of a trial (default: the best) as (N, H, W) float32 in [0, 1]; for a
    text model, n strings to a .txt file beside `output`.

    Returns the output path and where the generator came from ("checkpoint" or "retrained").
    """
    from gentune.device import resolve_device

    if n < 1:
        raise GentuneError("--n must be at least 1", value=n, fix="pass --n 10000")
    study = open_or_create(study_name, storage)
    settings = builtin_settings(study)
    chosen = _choose_trial(study, trial)
    family = trial_family(settings, chosen)
    dev = str(resolve_device(device))
    ckpt = runs_dir / study_name / "trials" / str(chosen.number) / "generator.pt"
    if ckpt.exists():
        _, generator, _ = family.load(ckpt, device=dev)
        source = f"checkpoint {ckpt}"
    else:
        if settings.dataset.startswith(("files:", "text:")):
            raise GentuneError(
                "this trial has no checkpoint here and its data are your own files",
                value=str(ckpt),
                fix="run gentune sample where the study was tuned",
            )
        again = retrain(settings, family, chosen, device=dev)
        family.save(
            ckpt, again.config, again.result.model, extra={"seed": again.seed, "budget": again.budget}
        )
        generator = again.result.model
        source = f"retrained trial {chosen.number}; checkpoint kept at {ckpt}" + again.note(
            chosen, settings.trial_seconds
        )
    images = family.sample(generator, n, seed=seed, device=dev)
    if isinstance(images, list):  # a text model
        output = output.with_suffix(".txt")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n\n---\n\n".join(images))
        return output, source
    arr = ((images.numpy().astype(np.float32) + 1.0) / 2.0).clip(0.0, 1.0)
    arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, arr)
    return output, source


def trial_family(settings: StudySettings, trial: FrozenTrial):
    """The family that trained `trial`: the study's, or with --model auto the one it drew."""
    from gentune.families import get_family

    family = get_family(settings.model, settings.dataset_ref.kind)
    if settings.model == "auto":
        family, _ = family.pick({"model": attrs.family(trial)})
    return family


def _choose_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise GentuneError(
                f"study {study.study_name!r} has no completed trial", fix="run gentune tune first"
            ) from None
    by_number = {t.number: t for t in trials}
    chosen = by_number.get(number)
    if chosen is None or chosen.state != TrialState.COMPLETE or attrs.config(chosen) is None:
        done = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
        raise GentuneError(
            f"trial {number} is not a completed trial of {study.study_name!r}",
            value=number,
            fix=f"choose one of: {done}",
        )
    return chosen
