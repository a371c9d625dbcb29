"""--confirm K: re-run the top K configurations under extra training seeds, pick the best by mean.

GAN results vary a lot between seeds (Lucic et al. 2018 report a standard deviation up to 5 FID
on MNIST), so the single best trial of a search is partly luck. The confirmation study
`<study>-confirm` queues each of the top K configurations (over all the given studies, by their
single-run value) once per extra seed (study seed + 1, + 2, ...), with the pruner off; each
configuration's values are its original run plus those re-runs. The ranking by mean, with the
standard deviation and the number of seeds, is stored as user attribute `confirmed` on the
confirmation study and on the last searched study, where `gentune best` shows it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.errors import GentuneError
from gentune.study.store import default_storage, open_study, stored_settings

CONFIRM_SEEDS = 2  # extra seeds per configuration: with the original run, 3 values each


def top_configs(studies: list[optuna.Study], k: int) -> list[dict[str, Any]]:
    """The k best distinct configurations over `studies` (complete trials, by value)."""
    reverse = studies[-1].direction == optuna.study.StudyDirection.MAXIMIZE
    trials = [
        (s, t)
        for s in studies
        for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("confirm_of") is None
    ]
    trials.sort(key=lambda st: st[1].value, reverse=reverse)
    out, seen = [], set()
    for s, t in trials:
        key = json.dumps(t.user_attrs.get("config", t.params), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "source": f"{s.study_name}#{t.number}",
                "config": t.user_attrs.get("config"),
                "params": t.params,
                "value": t.value,
                "seed": t.user_attrs.get("seed"),
                "family": t.user_attrs.get("family"),
            }
        )
        if len(out) == k:
            break
    return out


def confirm(
    studies: list[optuna.Study],
    *,
    top: int,
    seeds: int = CONFIRM_SEEDS,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    data_dir=None,
    device: str = "auto",
    progress: bool = True,
    threads: int | None = None,
    search: Callable[..., Any] | None = None,
) -> list[dict]:
    """Re-run the top `top` configurations of `studies` under `seeds` extra seeds each.

    `search(study=, trials=, prepare=)` runs the re-runs of a user's objective (see
    gentune.phases.stages); built-in studies run them from the searched study's stored settings.
    Returns the ranking (best mean first): {source, config, params, values, mean, sd, n, seeds,
    stopped}; the same list is stored as user attribute `confirmed`.
    """
    from gentune.api import work

    if top < 1 or seeds < 1:
        raise GentuneError(
            "--confirm K and --confirm-seeds S must be >= 1",
            value={"K": top, "S": seeds},
            fix="pass e.g. --confirm 3 --confirm-seeds 2",
        )
    last = studies[-1]
    candidates = top_configs(studies, top)
    if not candidates:
        raise GentuneError(
            "there is no complete trial to confirm",
            value=last.study_name,
            fix="run the search until trials complete, or drop --confirm",
        )
    name = f"{last.study_name}-confirm"
    base_seed = int(last.user_attrs.get("gentune", {}).get("seed", 0))

    def enqueue(study: optuna.Study) -> None:
        if study.user_attrs.get("confirm_queue") is not None:
            return  # resumed: the queue is there
        for c in candidates:
            for s in range(1, seeds + 1):
                attrs = {"confirm_of": c["source"], "train_seed": base_seed + s}
                if search is None:  # gentune's trainer takes the whole config
                    study.enqueue_trial(
                        {}, user_attrs={**attrs, "fixed_config": c["config"], "fixed_family": c["family"]}
                    )
                else:  # a user's objective gets the parameters back from its suggest calls
                    study.enqueue_trial(c["params"], user_attrs=attrs)
        study.set_user_attr("confirm_queue", {"candidates": candidates, "seeds": seeds})
        # Workers then run only the queued re-runs and never sample a fresh configuration.
        study.set_user_attr("grid_queue", len(candidates) * seeds)

    n = len(candidates) * seeds
    if search is not None:
        study = search(study=name, trials=n, prepare=enqueue).study
    else:
        url = storage or default_storage(name, Path(runs_dir))
        # Every queued trial must run to the end: a pruner would compare seeds, not configurations.
        settings = replace(stored_settings(last), pruner="none", patience=None)
        study = open_study(settings, storage=url, study_name=name)
        enqueue(study)
        queue = study.user_attrs["confirm_queue"]
        work(
            study,
            data_dir=data_dir,
            device=device,
            runs_dir=runs_dir,
            progress=progress,
            threads=threads,
            trials=len(queue["candidates"]) * queue["seeds"],
        )
    ranking = summarize(study, study.user_attrs["confirm_queue"]["candidates"])
    study.set_user_attr("confirmed", ranking)
    last.set_user_attr("confirmed", ranking)
    return ranking


def summarize(study: optuna.Study, candidates: list[dict]) -> list[dict]:
    """Each candidate's values over seeds (original + re-runs), mean and sd; best mean first."""
    out = []
    for c in candidates:
        runs = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("confirm_of") == c["source"]
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        done = [t for t in runs if t.state == TrialState.COMPLETE]
        values = [c["value"]] + [t.value for t in done]
        stopped = {
            t.user_attrs.get("train_seed"): t.user_attrs.get("prune_reason", "pruned")
            for t in runs
            if t.state == TrialState.PRUNED
        }
        out.append(
            {
                "source": c["source"],
                "params": c["params"],
                "config": c["config"],
                "values": values,
                "seeds": [c.get("seed")] + [t.user_attrs.get("train_seed") for t in done],
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
                "stopped": stopped,
            }
        )
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    # A configuration that some seed could not finish ranks after those that all finished.
    return sorted(out, key=lambda r: (bool(r["stopped"]), -r["mean"] if reverse else r["mean"]))
