"""Promotion: asynchronous successive halving whose promoted trials continue from their state.

A trial that completes its rung is told COMPLETE with its value there, like any trial, and its
member state (weights, optimizer state, RNG) is saved beside its checkpoint. When a slot of the
population frees, the best waiting candidate is promoted before any new configuration is
asked: a complete trial in the top 1/ETA of the values seen at its rung (ASHA's rule, Li et
al. 2020), not promoted yet, and, above rung 0, better than the trial it continued (so a model
is trained for as long as it keeps improving). The promotion is a new trial with the same
parameters and `promoted_from` = that trial, `rung` = its rung + 1, `start_state` = its state
file: it trains on to its rung's steps (`rung_steps`: ASHA's rungs grow ETA-fold) and is
scored, checkpointed and compared like any other trial, so `gentune best` and the report need
nothing new. Queued like any trial, it is re-run from the same state file when its process dies
(gentune.study.store.requeue keeps the keys).

A new study's ladder starts RUNGS_BELOW rungs under the study's steps (gentune.settings):
with 8000 steps, fresh trials train 889, the top third goes on to 2667, its top third to the
study's 8000, and (with --timeout, `top_rung`) the best of those to 24000. So a configuration
gets the one-at-a-time budget only once it has beaten most others, and --trials counts
configurations: promotions come on top, while a candidate is left (`candidate(...,
draining=True)` once no configuration is left to ask: a trial goes on once it is sure to be
in its rung's top third). A study made before this started at the study's steps (rungs_below
0) and keeps that.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.settings import ETA, rung_steps
from gentune.trial import attrs
from gentune.trial.attrs import TrialKey

__all__ = ["ETA", "candidate", "promote", "rung_steps", "state_path", "top_rung"]

MAX_RUNG = 3  # the highest rung of a ladder made before the lower rungs: 27x the study's steps
STATE_FILE = "state.pt"  # a complete trial's member state, in runs/<study>/trials/<n>/


def state_path(number: int) -> str:
    """Where trial `number`'s final member state is kept, relative to runs/<study>/."""
    return f"trials/{number}/{STATE_FILE}"


def candidate(
    study: optuna.Study,
    out_dir: Path,
    *,
    minimize: bool = True,
    draining: bool = False,
    top_rung: int = MAX_RUNG,
) -> FrozenTrial | None:
    """The complete trial to promote next, or None: the highest rung first, then the best value.

    A rung's top 1/ETA is of every trial that entered it: a trial pruned or stopped by a
    detector there counts, ranked last (on MNIST 8 of 20 fresh trials were; counting only the
    12 complete ones sent 4 on, not 7). While fresh configurations keep arriving, a rung
    promotes its top 1/ETA rounded down, as ASHA does. `draining` (no fresh configuration is
    left to ask): its top 1/ETA rounded up (the best of each rung, while it improves) of all
    the trials it will hold, counting those still running or queued at or below it as if each
    were to land above every complete one; so a trial goes on only once it is sure to be in
    that top, and no step is spent on one that the rung's last trials would have displaced.
    Promoting each new best at once, as before, sent four of six rung-1 trials on MNIST to the
    study's 8000 steps, where the top third is two. A trial reaches at most `top_rung`. Its
    state file must exist under `out_dir` (a trial finished by another machine's worker keeps
    its state there, so only that machine promotes it).
    """
    trials = study.get_trials(deepcopy=False)
    taken = {attrs.promoted_from(t) for t in trials} - {None}
    value = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    unsettled = [attrs.rung(t) for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    stopped: dict[int, int] = {}  # trials pruned at each rung: they entered it, and rank last
    for t in trials:
        if t.state == TrialState.PRUNED:
            stopped[attrs.rung(t)] = stopped.get(attrs.rung(t), 0) + 1
    sign = 1.0 if minimize else -1.0
    best_first = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: sign * float(t.value or 0.0),
    )
    for rung in range(top_rung - 1, -1, -1):
        at_rung = [t for t in best_first if attrs.rung(t) == rung]
        entered = len(at_rung) + stopped.get(rung, 0)
        if draining:
            pending = sum(r <= rung for r in unsettled)  # may still end at this rung
            top = -(-(entered + pending) // ETA) - pending
        else:
            top = entered // ETA
        for t in at_rung[: max(0, top)]:
            if t.number in taken or not (out_dir / state_path(t.number)).exists():
                continue
            parent = attrs.promoted_from(t)
            before = value.get(parent) if parent is not None else None
            assert t.value is not None
            if before is not None and not (t.value < before if minimize else t.value > before):
                continue  # it stopped improving: no more steps for it
            return t
    return None


def top_rung(rungs_below: int, timeout: float | None) -> int:
    """The highest rung of a study's ladder: with rungs under the study's steps, the study's
    steps, or under a --timeout the rung above (3x the study's steps, for the best while they
    improve and time is left). A --trials study so ends where its user expects, every good
    configuration trained to the study's steps and none longer unasked: on MNIST the 24000-step
    rung took 227 s alone on one core, as long as half the rest of the study, so a 20-trial
    population study with it (FID 0.81 in 11 min 26 s) ran longer than the one-at-a-time default
    (2.86 in 9 min 39 s). A ladder made before the lower rungs (`rungs_below` 0) starts at the
    study's steps and keeps its MAX_RUNG.

    >>> top_rung(1, None), top_rung(1, 1800.0), top_rung(0, None)
    (1, 2, 3)
    """
    if rungs_below == 0:
        return MAX_RUNG
    return rungs_below + (timeout is not None)


def promote(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the promotion of `trial`: same parameters, one rung up, from its saved state."""
    study.enqueue_trial(
        trial.params,
        user_attrs={
            TrialKey.PROMOTED_FROM: trial.number,
            TrialKey.RUNG: attrs.rung(trial) + 1,
            TrialKey.START_STATE: state_path(trial.number),
            TrialKey.START_STEP: attrs.steps(trial) or 0,
            TrialKey.TRAIN_SEED: attrs.seed(trial) or 0,
        },
    )
