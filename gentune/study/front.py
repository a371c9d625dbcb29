"""The Pareto front of a multi-objective study (`--objective fid,seconds`), as plain JSON.

Such a study has no single best trial: a trial is on the front when no other complete trial is
at least as good in every objective and better in one (Optuna's `study.best_trials`). This is
what `gentune best`, `best.json` and `TuneResult.best` hold for it instead of one best trial.
Reads stored attributes only: no torch, so `gentune best` stays quick.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.trial.attrs import StudyKey, TrialKey

FRONT_NOTE = (
    "a multi-objective study has no single best trial: these trials form its Pareto front (none "
    "is beaten in every objective by another); pick one by its trial number, e.g. gentune "
    "sample --trial N"
)


def objective_names(study: optuna.Study) -> list[str]:
    """The names of a study's objectives: those it stored, else 'objective i'."""
    n = len(study.directions)
    names = study.metric_names
    if names and len(names) == n:
        return list(names)
    stored = str(study.user_attrs.get(StudyKey.SETTINGS, {}).get("objective", ""))
    parts = [p.strip() for p in stored.split(",")]
    return parts if len(parts) == n and all(parts) else [f"objective {i}" for i in range(n)]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials on the study's Pareto front, best first by the first objective."""
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    return sorted(study.best_trials, key=lambda t: (sign * t.values[0], t.number))


def front_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The Pareto front of a multi-objective study: each trial's number, values by objective,
    parameters and metrics, with the floor, the settings and the trial counts; None before any
    trial completes."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    names = objective_names(study)
    settings = study.user_attrs.get(StudyKey.SETTINGS, {})
    return {
        "study": study.study_name,
        "objective": settings.get("objective") or ",".join(names),
        "objectives": names,
        "directions": [d.name.lower() for d in study.directions],
        "note": FRONT_NOTE,
        "front": [_member(t, names) for t in pareto_front(study)],
        "floor": study.user_attrs.get(StudyKey.FLOOR),
        "extractor": study.user_attrs.get(StudyKey.EXTRACTOR),
        "settings": settings,
        "trials": trial_counts(study),
    }


def trial_counts(study: optuna.Study) -> dict[str, Any]:
    """The study's complete, pruned (and why: the pruner or a detector) and failed trials, as
    `gentune best` and best.json give them.

    >>> s = optuna.create_study(study_name="counts")
    >>> s.add_trial(optuna.trial.create_trial(value=1.0))
    >>> why = {"prune_reason": "collapse"}
    >>> s.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=why))
    >>> trial_counts(s)
    {'complete': 1, 'pruned': 1, 'pruned_by_reason': {'collapse': 1}, 'failed': 0}
    """
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons = Counter(t.user_attrs.get(TrialKey.PRUNE_REASON, "pruned") for t in pruned)
    return {
        "complete": len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        "pruned": len(pruned),
        "pruned_by_reason": dict(reasons),
        "failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
    }


def _member(t: FrozenTrial, names: list[str]) -> dict[str, Any]:
    attrs = t.user_attrs
    return {
        "trial": t.number,
        "values": dict(zip(names, t.values)),
        "params": t.params,
        "config": attrs.get(TrialKey.CONFIG),
        "metrics": attrs.get(TrialKey.METRICS),
        "family": attrs.get(TrialKey.FAMILY),
        "train_seconds": attrs.get(TrialKey.TRAIN_SECONDS),
        "seed": attrs.get(TrialKey.SEED),
    }
