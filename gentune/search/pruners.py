"""Pruners: names a user types, mapped to Optuna pruners sized to the study's evaluation schedule.

A pruner compares a running trial's intermediate values (the objective measured every
`eval_every` G steps, see gentune.trial.monitor) with other trials' values at the same step and stops
the losers. The resource unit is the G step, so successive halving and Hyperband rungs sit on
evaluation steps: the first rung at the first evaluation, the last at the full budget.
Optuna's SuccessiveHalvingPruner and HyperbandPruner are the asynchronous variants (ASHA), so
they work with several workers.
"""

from __future__ import annotations

import warnings

import optuna

from gentune.errors import GentuneError, unknown_choice

PRUNERS = ("none", "median", "percentile", "halving", "hyperband")
# Grid search must measure every point it lists, so it prunes nothing by default; the others
# stop trials that trail the study at the same step. TPE and GP learn from pruned trials too
# (Optuna ranks them below complete ones by how far they got). Median beat Hyperband as TPE's
# pruner in bench/early_stopping.py (digits, 3 seeds x 150 s: time to plain TPE's best 0.40x
# vs 0.50x of plain's, best FID 1.54 vs 2.07), see docs/detectors.md.
DEFAULT_PRUNER = {"grid": "none", "random": "median", "qmc": "median", "tpe": "median", "gp": "median"}
# Trials that run to the end before any pruner compares anything: without them successive
# halving prunes the second trial for trailing the first, and a study can end with no
# complete trial at all.
STARTUP_TRIALS = 3
PERCENTILE = 25.0  # the percentile pruner keeps trials in the best quarter
REDUCTION_FACTOR = 3


def default_pruner(strategy: str) -> str:
    """The pruner a strategy gets when the user names none."""
    return DEFAULT_PRUNER.get(strategy, "median")


def make_pruner(
    name: str, *, first_step: int | str, total_steps: int | str, patience: int | None = None
) -> optuna.pruners.BasePruner:
    """The pruner `name`; `first_step` is the first evaluation, `total_steps` the trial budget
    (either may be "auto" when the budget is in epochs: Optuna then takes them from the first
    trials).

    `patience` P wraps it in Optuna's PatientPruner: a trial is pruned only after P reports in a
    row without improvement, so a slow start or one bad evaluation is forgiven.

    >>> type(make_pruner("median", first_step=500, total_steps=3000)).__name__
    'MedianPruner'
    >>> type(make_pruner("hyperband", first_step=500, total_steps=3000).pruner).__name__  # in Startup
    'HyperbandPruner'
    """
    if name not in PRUNERS:
        raise unknown_choice("pruner", name, PRUNERS)
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
        raise GentuneError(
            "--patience must be an integer >= 1 (evaluations without improvement)",
            value=patience,
            fix="pass --patience 2, or leave it out",
        )
    warmup = first_step if isinstance(first_step, int) else 0
    pruner: optuna.pruners.BasePruner
    if name == "none":
        pruner = optuna.pruners.NopPruner()
    elif name == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=warmup)
    elif name == "percentile":
        pruner = optuna.pruners.PercentilePruner(
            PERCENTILE, n_startup_trials=STARTUP_TRIALS, n_warmup_steps=warmup
        )
    elif name == "halving":
        pruner = Startup(
            optuna.pruners.SuccessiveHalvingPruner(min_resource=first_step, reduction_factor=REDUCTION_FACTOR)
        )
    else:
        pruner = Startup(
            optuna.pruners.HyperbandPruner(
                min_resource=warmup or 1, max_resource=total_steps, reduction_factor=REDUCTION_FACTOR
            )
        )
    if patience is not None and name != "none":
        with warnings.catch_warnings():  # experimental in Optuna; chosen on purpose
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner = optuna.pruners.PatientPruner(pruner, patience=patience)
    return pruner


class Startup(optuna.pruners.BasePruner):
    """Prune nothing until the study holds `n` complete trials, then defer to `pruner`.

    While it waits, the trials still leave their value at each rung they pass, as successive
    halving records a promoted trial, so the first trials are the yardstick of later ones.
    Wrapping Hyperband also means the sampler sees every trial, not only those of the running
    trial's bracket (Optuna filters by bracket only for a bare HyperbandPruner): with the few
    dozen trials of a GAN study, TPE needs all of them.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, n: int = STARTUP_TRIALS):
        self.pruner, self.n = pruner, n

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) >= self.n:
            return self.pruner.prune(study, trial)
        halving = self._halving(study, trial)
        if halving is not None:
            _record_rungs(halving, study, trial)
        return False

    def _halving(self, study, trial) -> optuna.pruners.SuccessiveHalvingPruner | None:
        """The successive-halving pruner that judges `trial` (for Hyperband: its bracket's)."""
        p = self.pruner
        if isinstance(p, optuna.pruners.HyperbandPruner):
            if not p._pruners:
                p._try_initialization(study)
            if not p._pruners:
                return None  # max_resource "auto": unknown until a trial completes
            return p._pruners[p._get_bracket_id(study, trial)]
        return p if isinstance(p, optuna.pruners.SuccessiveHalvingPruner) else None


def _record_rungs(
    sh: optuna.pruners.SuccessiveHalvingPruner, study: optuna.Study, trial: optuna.trial.FrozenTrial
) -> None:
    """Store the trial's value at each rung it has newly passed, as if promoted each time."""
    step = trial.last_step
    if step is None or not isinstance(sh._min_resource, int):
        return
    rung = 0
    while f"completed_rung_{rung}" in trial.system_attrs:
        rung += 1
    value = trial.intermediate_values[step]
    while step >= sh._min_resource * sh._reduction_factor ** (sh._min_early_stopping_rate + rung):
        study._storage.set_trial_system_attr(trial._trial_id, f"completed_rung_{rung}", value)
        rung += 1
