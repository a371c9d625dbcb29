"""How far the report's verdict can be trusted, as plain data: the best trial's noise band and
the trials inside it, what the training loss would have picked, and parameter importance
only where it rests on enough trials.

Importance: Optuna's evaluators read complete trials only, and a study that prunes most of its
trials (the digits main job completes 7 of 20) would then rest its importance on a handful.
A pruned trial's last intermediate value is the objective measured earlier in training, so
it enters a copy of the study at that value, capped at the worst complete trial's value: the
pruner stopped it for being worse than its peers at that step, which the cap keeps, while an
untrained model's FID of several hundred does not swamp the variance that fANOVA divides up
(the ranking then asks "what separates good runs from bad ones", as a complete-only study
with more trials would). Importance is not drawn below MIN_IMPORTANCE_TRIALS trials, and the
report says how many it rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState, create_trial

from gentune.report.extract import StudyInfo, TrialInfo, best_trials
from gentune.study.summary import within_band

MIN_IMPORTANCE_TRIALS = 10  # below this, a forest's importances are mostly noise
IMPORTANCE_SEED = 0  # fANOVA's forest is random: a fixed seed draws the same bars every time


@dataclass(frozen=True)
class Band:
    """The best trial's noise band (StudyKey.NOISE_BAND) and the trials inside it."""

    raw: dict[str, Any]
    within: list[int]  # other complete trials that one latent seed cannot tell from the best


def noise(info: StudyInfo) -> Band | None:
    """The band when it was measured on the current best trial of a one-objective study."""
    band = info.noise_band
    best = best_trials(info, 1)
    if band is None or len(info.directions) != 1 or not best or band.get("trial") != best[0].number:
        return None
    values = {t.number: t.values_or_empty[0] for t in info.completed}
    return Band(band, within_band(band, values, maximize=info.directions[0] == "maximize"))


@dataclass(frozen=True)
class LossPick:
    """The complete trial with the lowest final training loss, beside the best trial."""

    trial: TrialInfo
    best: TrialInfo
    loss_name: str  # the key of final_loss compared, e.g. "g"
    loss: float


def main_loss_key(family: str | None, losses: dict[str, Any]) -> str | None:
    """The key of a trial's final losses that `--objective loss` ranks by: the built-in
    family's main_loss, or the only key there is; None when that cannot be told."""
    from gentune.families.registry import BUILTIN_FAMILIES  # the report already loads torch

    cls = BUILTIN_FAMILIES.get(family or "")
    if cls is not None:
        return cls.main_loss if cls.main_loss in losses else None
    return next(iter(losses)) if len(losses) == 1 else None


def loss_pick(info: StudyInfo) -> LossPick | None:
    """What ranking by the final training loss would have chosen; None when the study ranks by
    the loss already, has several objectives, or no complete trial recorded its loss."""
    if len(info.directions) != 1 or info.gentune.get("objective") == "loss":
        return None
    best = best_trials(info, 1)
    scored: list[tuple[float, int, TrialInfo, str]] = []
    for t in info.completed:
        key = main_loss_key(t.family or info.gentune.get("model"), t.final_loss)
        value = t.final_loss.get(key) if key else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.append((float(value), t.number, t, str(key)))
    if not scored or not best:
        return None
    loss, _, trial, key = min(scored, key=lambda s: (s[0], s[1]))
    return LossPick(trial=trial, best=best[0], loss_name=key, loss=loss)


@dataclass(frozen=True)
class Importance:
    """Parameter importances (most important first), the trials they rest on, or why none."""

    values: dict[str, float]
    complete: int
    pruned: int
    why_not: str | None = None

    @property
    def basis(self) -> str:
        """'from 14 complete trials' or 'from 7 complete and 13 pruned trials'."""
        if not self.pruned:
            return f"from {self.complete} complete trial{'s' if self.complete != 1 else ''}"
        return f"from {self.complete} complete and {self.pruned} pruned trials"


def _importance_trials(study: optuna.Study, info: StudyInfo) -> tuple[list[FrozenTrial], int, int]:
    """The trials importance is computed on, as complete trials of one value, with the counts
    of complete and pruned trials among them (the module docstring says why and how)."""
    maximize = info.directions[0] == "maximize"
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    done = [(t, t.values[0]) for t in trials if t.state == TrialState.COMPLETE and t.values]
    rows = [(t.params, t.distributions, v) for t, v in done]
    pruned = 0
    if done and len(info.directions) == 1:
        worst = (min if maximize else max)(v for _, v in done)
        for t in trials:
            last = _last_value(t)
            if t.state == TrialState.PRUNED and last is not None and t.params:
                rows.append((t.params, t.distributions, (max if maximize else min)(last, worst)))
                pruned += 1
    return [_complete(p, d, v) for p, d, v in rows], len(done), pruned


def _last_value(t: FrozenTrial) -> float | None:
    finite = [(s, v) for s, v in t.intermediate_values.items() if v is not None and math.isfinite(v)]
    return max(finite)[1] if finite else None


def _complete(params: dict, distributions: dict[str, BaseDistribution], value: float) -> FrozenTrial:
    return create_trial(state=TrialState.COMPLETE, params=params, distributions=distributions, value=value)


def importance(study: optuna.Study, info: StudyInfo) -> Importance:
    """Importances of the first objective, computed on a copy of the study's trials."""
    if not info.param_names:
        return Importance({}, 0, 0, "the study has no parameters")
    trials, complete, pruned = _importance_trials(study, info)
    if complete < 2 or len(trials) < MIN_IMPORTANCE_TRIALS:
        with_pruned = f" and {pruned} pruned with a measured value" if pruned else ""
        why = (
            f"drawn from {MIN_IMPORTANCE_TRIALS} trials or more, at least 2 of them complete; "
            f"this study has {complete} complete{with_pruned}, and importances from fewer are mostly noise"
        )
        return Importance({}, complete, pruned, why)
    copy = optuna.create_study(direction="maximize" if info.directions[0] == "maximize" else "minimize")
    copy.add_trials(trials)
    try:
        values = optuna.importance.get_param_importances(
            copy, evaluator=FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        )
    except (ValueError, RuntimeError) as err:  # e.g. no parameter shared by all trials
        return Importance({}, complete, pruned, f"Optuna could not compute importances: {err}")
    if not values:
        return Importance({}, complete, pruned, "no parameter is shared by all the trials")
    return Importance(dict(values), complete, pruned)
