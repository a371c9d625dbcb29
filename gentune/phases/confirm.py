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
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.errors import GentuneError
from gentune.phases.search import Search, value_of
from gentune.trial.attrs import StudyKey, TrialKey

CONFIRM_SEEDS = 2  # extra seeds per configuration: with the original run, 3 values each


def top_configs(studies: list[optuna.Study], k: int) -> list[dict[str, Any]]:
    """The k best distinct configurations over `studies` (complete trials, by value)."""
    reverse = studies[-1].direction == optuna.study.StudyDirection.MAXIMIZE
    trials = [
        (s, t)
        for s in studies
        for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(TrialKey.CONFIRM_OF) is None
    ]
    trials.sort(key=lambda st: value_of(st[1]), reverse=reverse)
    out, seen = [], set()
    for s, t in trials:
        key = json.dumps(t.user_attrs.get(TrialKey.CONFIG, t.params), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "source": f"{s.study_name}#{t.number}",
                "config": t.user_attrs.get(TrialKey.CONFIG),
                "params": t.params,
                "value": t.value,
                "seed": t.user_attrs.get(TrialKey.SEED),
                "family": t.user_attrs.get(TrialKey.FAMILY),
            }
        )
        if len(out) == k:
            break
    return out


def confirm(
    studies: list[optuna.Study], search: Search, *, top: int, seeds: int = CONFIRM_SEEDS
) -> list[dict]:
    """Re-run the top `top` configurations of `studies` under `seeds` extra seeds each.

    The re-runs are queued in the study `<last study>-confirm` of `search`, with the pruner off:
    every queued trial must run to the end, or a pruner would compare seeds, not configurations.
    Returns the ranking (best mean first): {source, config, params, values, mean, sd, n, seeds,
    stopped}; the same list is stored as user attribute `confirmed`.
    """
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
    base_seed = int(last.user_attrs.get(StudyKey.SETTINGS, {}).get("seed", 0))

    def enqueue(study: optuna.Study) -> None:
        if study.user_attrs.get(StudyKey.CONFIRM_QUEUE) is not None:
            return  # resumed: the queue is there
        for c in candidates:
            for s in range(1, seeds + 1):
                params, attrs = search.rerun(c)
                attrs = {**attrs, TrialKey.CONFIRM_OF: c["source"], TrialKey.TRAIN_SEED: base_seed + s}
                study.enqueue_trial(params, user_attrs=attrs)
        study.set_user_attr(StudyKey.CONFIRM_QUEUE, {"candidates": candidates, "seeds": seeds})
        # Workers then run only the queued re-runs and never sample a fresh configuration.
        study.set_user_attr(StudyKey.GRID_QUEUE, len(candidates) * seeds)

    # The searched space of the last study, so that the confirmation study stores its settings.
    result = search.run(
        study=f"{last.study_name}-confirm",
        space=search.space_of(last) if search.known_space() is not None else None,
        trials=len(candidates) * seeds,
        prepare=enqueue,
        pruner="none",
    )
    study = result.study
    queue = study.user_attrs[StudyKey.CONFIRM_QUEUE]
    ranking = summarize(study, queue["candidates"])
    study.set_user_attr(StudyKey.CONFIRMED, ranking)
    last.set_user_attr(StudyKey.CONFIRMED, ranking)
    return ranking


def summarize(study: optuna.Study, candidates: list[dict]) -> list[dict]:
    """Each candidate's values over seeds (original + re-runs), mean and sd; best mean first."""
    out = []
    for c in candidates:
        runs = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(TrialKey.CONFIRM_OF) == c["source"]
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        done = [t for t in runs if t.state == TrialState.COMPLETE]
        values = [c["value"]] + [t.value for t in done]
        stopped = {
            t.user_attrs.get(TrialKey.TRAIN_SEED): t.user_attrs.get(TrialKey.PRUNE_REASON, "pruned")
            for t in runs
            if t.state == TrialState.PRUNED
        }
        out.append(
            {
                "source": c["source"],
                "params": c["params"],
                "config": c["config"],
                "values": values,
                "seeds": [c.get("seed")] + [t.user_attrs.get(TrialKey.TRAIN_SEED) for t in done],
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
                "stopped": stopped,
            }
        )
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    # A configuration that some seed could not finish ranks after those that all finished.
    return sorted(out, key=lambda r: (bool(r["stopped"]), -r["mean"] if reverse else r["mean"]))
