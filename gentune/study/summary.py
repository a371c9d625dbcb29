"""The best trial of a study, with its metrics, floor and provenance, as plain JSON."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's parameters, metrics (with N and the floor) and provenance, as JSON."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    attrs = best.user_attrs
    settings = study.user_attrs.get("gentune", {})
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons: dict[str, int] = {}
    for t in pruned:
        r = t.user_attrs.get("prune_reason", "pruned")
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "study": study.study_name,
        "trial": best.number,
        "objective": settings.get("objective"),
        "value": best.value,
        "params": best.params,
        "config": attrs.get("config"),
        "metrics": attrs.get("metrics"),
        "floor": study.user_attrs.get("floor"),
        "extractor": study.user_attrs.get("extractor"),
        "family": attrs.get("family"),
        "final_loss": attrs.get("final_loss"),
        "overfitting": attrs.get("overfitting"),
        "train_seconds": attrs.get("train_seconds"),
        "device": attrs.get("device"),
        "seed": attrs.get("seed"),
        "text_samples": attrs.get("text_samples"),
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
    ranking = study.user_attrs.get("confirmed")
    if not ranking:
        return None
    keys = ("source", "params", "mean", "sd", "n", "values", "seeds", "stopped")
    return {"best": ranking[0], "ranking": [{k: r.get(k) for k in keys} for r in ranking]}
