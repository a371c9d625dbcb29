"""The best trial of a study, with its metrics, floor and provenance, as plain JSON."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.trial.attrs import StudyKey, TrialKey


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's parameters, metrics (with N and the floor) and provenance, as JSON."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    attrs = best.user_attrs
    settings = study.user_attrs.get(StudyKey.SETTINGS, {})
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons: dict[str, int] = {}
    for t in pruned:
        r = t.user_attrs.get(TrialKey.PRUNE_REASON, "pruned")
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "study": study.study_name,
        "trial": best.number,
        "objective": settings.get("objective"),
        "value": best.value,
        "params": best.params,
        "config": attrs.get(TrialKey.CONFIG),
        "metrics": attrs.get(TrialKey.METRICS),
        "floor": study.user_attrs.get(StudyKey.FLOOR),
        "extractor": study.user_attrs.get(StudyKey.EXTRACTOR),
        "family": attrs.get(TrialKey.FAMILY),
        "final_loss": attrs.get(TrialKey.FINAL_LOSS),
        "overfitting": attrs.get(TrialKey.OVERFITTING),
        "train_seconds": attrs.get(TrialKey.TRAIN_SECONDS),
        "device": attrs.get(TrialKey.DEVICE),
        "seed": attrs.get(TrialKey.SEED),
        "text_samples": attrs.get(TrialKey.TEXT_SAMPLES),
        "settings": settings,
        "trials": {
            "complete": len(completed),
            "pruned": len(pruned),
            "pruned_by_reason": reasons,
            "failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        },
        "confirmed": _confirmed(study),
    }


def _confirmed(study: optuna.Study) -> dict[str, Any] | None:
    """The --confirm result (gentune.phases.confirm): the pick by mean over seeds, and the ranking."""
    ranking = study.user_attrs.get(StudyKey.CONFIRMED)
    if not ranking:
        return None
    keys = ("source", "params", "mean", "sd", "n", "values", "seeds", "stopped")
    return {"best": ranking[0], "ranking": [{k: r.get(k) for k in keys} for r in ranking]}
