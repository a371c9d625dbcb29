"""The best trial's noise band: its metric re-scored under other latent seeds, no retraining.

A trial's value is measured once, on samples from one latent seed (EVAL_SEED), so part of the
gap between the best trial and the next ones is the luck of that draw: on the digits main job,
10 latent seeds gave FID 2.15 ± 0.17 for the best trial, a band that held the top 3 trials.
This phase loads the best trial's checkpoint, draws N samples under each of `seeds` further
latent seeds, scores them with the study's Evaluator and stores mean ± sd (StudyKey.NOISE_BAND)
for the report and `gentune best`, which flag the trials inside the band
(gentune.study.summary.within_band).

Only the sample metrics (fid, kid) depend on the latent seed: a study tuned on its loss or NLL,
a text model and a user's objective get no band.
"""

from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.settings import RunOptions, StudySettings
from gentune.study.sampling import trial_family
from gentune.study.summary import band_text, confirm_hint, noise_summary
from gentune.study.targets import BuiltinTarget, pinned_sha256
from gentune.trial import attrs
from gentune.trial.attrs import StudyKey
from gentune.trial.objective import EVAL_SEED

SEED_METRICS = ("fid", "kid")  # objectives whose value depends on the latent seed


def band_seeds(k: int) -> list[int]:
    """The latent seeds of a band of `k`: the ones after the trials' own EVAL_SEED.

    >>> band_seeds(3)
    [12346, 12347, 12348]
    """
    return [EVAL_SEED + i for i in range(1, k + 1)]


def noise_band(
    study: optuna.Study,
    settings: StudySettings,
    *,
    out_dir: Path,
    seeds: int,
    data: Any = None,
    data_dir: Any = None,
    device: str = "auto",
) -> dict[str, Any] | None:
    """Re-score the best trial's checkpoint under `seeds` latent seeds; store and return the band.

    Returns the dict stored as StudyKey.NOISE_BAND ({trial, metric, value, mean, sd, values,
    seeds, n, seconds}), or None when there is nothing to measure: `seeds` 0, an objective that
    does not depend on the latent seed, no complete trial, or no checkpoint of the best trial
    under `out_dir` (tuned on another machine). A band already stored for the same trial and
    seeds is returned as it is (a resumed, finished study costs nothing).
    """
    metric = settings.objective
    if seeds < 1 or metric not in SEED_METRICS or settings.dataset_ref.kind == "text":
        return None
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    stored = attrs.noise_band(study)
    wanted = band_seeds(seeds)
    if stored is not None and stored.get("trial") == best.number and stored.get("seeds") == wanted:
        return stored
    checkpoint = out_dir / "trials" / str(best.number) / "generator.pt"
    if not checkpoint.exists():
        return None
    start = time.perf_counter()
    target = BuiltinTarget(settings, sha256=pinned_sha256(study), data=data)
    dev, _, evaluator = target.prepare(study, data_dir, device)
    if evaluator is None:
        return None
    family = trial_family(settings, best, pinned_sha256(study))
    _, model, _ = family.load(checkpoint, device=str(dev))
    n = evaluator.info["n"]
    values = [
        float(evaluator.evaluate(family.sample(model, n, seed=s, device=str(dev)), keys={metric})[metric])
        for s in wanted
    ]
    band = {
        "trial": best.number,
        "metric": metric,
        "value": best.value,
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
        "seeds": wanted,
        "n": n,
        "seconds": round(time.perf_counter() - start, 2),
    }
    study.set_user_attr(StudyKey.NOISE_BAND, band)
    return band


def measure_noise(
    study: optuna.Study,
    settings: StudySettings,
    run: RunOptions,
    *,
    out_dir: Path,
    data: Any = None,
    data_dir: Any = None,
) -> dict[str, Any] | None:
    """`noise_band` with `run.noise_seeds` seeds after a search, said on stderr when the run
    shows progress; a failure is a warning, never a lost study."""
    try:
        band = noise_band(
            study,
            settings,
            out_dir=out_dir,
            seeds=run.noise_seeds,
            data=data,
            data_dir=data_dir,
            device=run.device,
        )
    except Exception as e:  # noqa: BLE001 - the study is safe; say what went wrong and go on
        warnings.warn(f"the best trial's noise band could not be measured: {e!r}", stacklevel=2)
        return None
    if band is not None and run.progress:
        from rich.console import Console

        say = Console(stderr=True, soft_wrap=True, highlight=False, markup=False).print
        say(f"best trial {band['trial']}: {band_text(band)}, measured in {band['seconds']:.1f} s")
        hint = confirm_hint(noise_summary(study, study.best_trial) or {})
        if hint:
            say(hint)
    return band
