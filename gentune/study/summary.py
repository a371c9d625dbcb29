"""The best trial of a study, with its metrics, floor and provenance, as plain JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.paths import write_atomic
from gentune.study.front import front_summary, trial_counts
from gentune.trial.attrs import StudyKey, TrialKey
from gentune.trial.attrs import noise_band as stored_band

# Metrics whose short name is an acronym, written in capitals for people.
ACRONYMS = {"fid": "FID", "kid": "KID", "nll": "NLL"}


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's parameters, metrics (with N and the floor) and provenance, as JSON; a
    multi-objective study's Pareto front instead (gentune.study.front, key `front`)."""
    if len(study.directions) > 1:
        return front_summary(study)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    attrs = best.user_attrs
    settings = study.user_attrs.get(StudyKey.SETTINGS, {})
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
        "trials": trial_counts(study),
        "confirmed": _confirmed(study),
        "noise_band": noise_summary(study, best),
    }


def _confirmed(study: optuna.Study) -> dict[str, Any] | None:
    """The --confirm result (gentune.phases.confirm): the pick by mean over seeds, and the ranking."""
    ranking = study.user_attrs.get(StudyKey.CONFIRMED)
    if not ranking:
        return None
    keys = ("source", "params", "mean", "sd", "n", "values", "seeds", "stopped")
    return {"best": ranking[0], "ranking": [{k: r.get(k) for k in keys} for r in ranking]}


def noise_summary(study: optuna.Study, best: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The stored noise band (gentune.phases.noise) when it was measured on `best`, with
    `within`: the other complete trials inside it; None when there is none (older studies, a
    user's objective, --noise-seeds 0) or the best trial has changed since."""
    band = stored_band(study)
    if band is None or band.get("trial") != best.number:
        return None
    values = {
        t.number: t.value
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    }
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return {**band, "within": within_band(band, values, maximize=maximize)}


def within_band(band: dict[str, Any], values: dict[int, float], *, maximize: bool = False) -> list[int]:
    """The trials, other than the band's own, whose value is no worse than the band's far edge
    (mean + sd when minimising): one latent seed cannot tell them from the best.

    >>> within_band({"trial": 0, "mean": 2.15, "sd": 0.17}, {0: 2.1, 1: 2.3, 2: 2.4, 3: 1.9})
    [1, 3]
    """
    edge = band["mean"] - band["sd"] if maximize else band["mean"] + band["sd"]
    return sorted(
        n for n, v in values.items() if n != band.get("trial") and (v >= edge if maximize else v <= edge)
    )


def band_text(band: dict[str, Any]) -> str:
    """The best value with its band, as the report and `gentune best` show it.

    >>> band_text({"metric": "fid", "value": 2.1912, "mean": 2.1501, "sd": 0.1689, "seeds": [1, 2, 3, 4, 5]})
    'FID 2.19 (2.15 ± 0.17 over 5 latent seeds)'
    """
    name = ACRONYMS.get(band["metric"], band["metric"])
    k = len(band.get("seeds") or band.get("values") or [])
    return f"{name} {band['value']:.3g} ({band['mean']:.3g} ± {band['sd']:.2g} over {k} latent seeds)"


def confirm_hint(noise: dict[str, Any]) -> str | None:
    """What to do when other trials lie inside the best trial's band (`noise_summary`), or None.

    >>> confirm_hint({"trial": 4, "within": [2, 7]})
    'trials 2, 7 are within the noise of trial 4: rerun with --confirm 3 to rank the 3 by mean over seeds'
    """
    within = noise.get("within") or []
    if not within:
        return None
    listed = ", ".join(str(n) for n in within)
    trials = f"trial {listed} is" if len(within) == 1 else f"trials {listed} are"
    k = len(within) + 1
    return (
        f"{trials} within the noise of trial {noise['trial']}: rerun with --confirm {k} to rank "
        f"the {k} by mean over seeds"
    )


def noise_lines(summary: dict[str, Any]) -> list[str]:
    """What `gentune best` says of a best_summary's noise band: the band, and the trials
    inside it with what to do (unless --confirm has ranked them); nothing without a band."""
    noise = summary.get("noise_band")
    if not noise:
        return []
    hint = None if summary.get("confirmed") else confirm_hint(noise)
    return [f"noise band: {band_text(noise)}"] + ([hint] if hint else [])


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as strict JSON, whole or not at all: an infinite or NaN number (a diverged
    loss, a metric that could not be computed) becomes null, since JSON has no Infinity and
    strict readers refuse it.

    >>> import tempfile
    >>> p = write_json(Path(tempfile.mkdtemp()) / "b.json", {"fid": float("inf"), "n": [1.5, float("nan")]})
    >>> p.read_text().split()
    ['{', '"fid":', 'null,', '"n":', '[', '1.5,', 'null', ']', '}']
    """
    text = json.dumps(_finite(data), indent=2, allow_nan=False)
    return write_atomic(path, text, path.name, fix="free space there, or pass -o with a path elsewhere")


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data
