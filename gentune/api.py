"""The public Python API: tune a model family, or run your own Optuna objective under gentune.

Options come in a few typed groups (gentune.settings): `Budget` (training per trial),
`SearchOptions` (strategy, trials, space, seed), `EarlyStop` (pruner, evaluations, detectors),
`RunOptions` (study name, storage, device, workers, outputs) and `Phases` (stages, narrowing,
confirmation). A field left None takes its default in one place, gentune.settings, or what
an existing study stored, so re-running the same call resumes the study.

>>> from gentune import Budget, SearchOptions, RunOptions, tune
>>> result = tune(dataset="digits", budget=Budget(steps=50),
...               search=SearchOptions(trials=2), run=RunOptions(runs_dir=tmp))  # doctest: +SKIP
>>> result.best["metrics"]["fid"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
import torch

from gentune.loading import load_objective
from gentune.phases import run_phases
from gentune.phases.search import BuiltinSearch, TuneResult, UserSearch, run_threads
from gentune.settings import (
    Budget,
    DatasetRef,
    EarlyStop,
    Phases,
    RunOptions,
    SearchOptions,
    TuneRequest,
    check_phases,
)
from gentune.study.runner import TrialCallback
from gentune.study.summary import best_summary

__all__ = [
    "Budget",
    "DatasetRef",
    "EarlyStop",
    "Phases",
    "RunOptions",
    "SearchOptions",
    "TuneResult",
    "best_summary",
    "create",
    "create_objective",
    "run_objective",
    "tune",
]


def tune(
    *,
    model: str = "gan-mlp",
    dataset: str | DatasetRef = "digits",
    data_dir: str | Path | None = None,
    objective: str | None = None,
    n_eval: int | None = None,
    budget: Budget = Budget(),  # noqa: B008 - frozen dataclasses, never mutated
    search: SearchOptions = SearchOptions(),  # noqa: B008
    early_stop: EarlyStop = EarlyStop(),  # noqa: B008
    run: RunOptions = RunOptions(),  # noqa: B008
    phases: Phases = Phases(),  # noqa: B008
    callbacks: Sequence[TrialCallback] = (),
) -> TuneResult:
    """Tune `model` on `dataset`; calling it again with the same arguments resumes the study.

    Args:
        model: a built-in family (gentune.families.MODELS), "auto" (one search across them),
            or a user's family class as "pkg.module:Class" / "FILE.py:Class" (docs/families.md).
        dataset: "digits", "mnist", "files" or "text", or a DatasetRef.
        data_dir: a local MNIST folder, your images folder (files) or text file (text).
        objective: fid, kid, nll or loss; None: nll on text, fid on images. Two or three
            joined by commas ("fid,seconds", "precision,recall") run a multi-objective study
            whose result is a Pareto front (`TuneResult.best_trials`); it prunes no trial,
            and stages, narrowing and confirmation are refused (they need one best trial).
        n_eval: N generated samples per metric value; None: the evaluator's default.
        budget, search, early_stop, run, phases: see gentune.settings.
        callbacks: Optuna's trial callbacks, each called as `callback(study, frozen_trial)`
            after every finished trial (complete, pruned or failed), as `study.optimize`
            calls them: optuna-integration's MLflowCallback or WeightsAndBiasesCallback, or
            gentune.trackers.MLflowTracker (params, metrics and the sample grid). Not with
            run.workers > 1, whose trials run in other processes; with callbacks, the default
            run.workers (None: one worker process per CPU core) runs the trials here.

    Returns:
        The TuneResult of the last study searched: the study, its output folder and its best
        trial (parameters, metrics with N and the floor, provenance).
    """
    request = _request(model, dataset, data_dir, objective, n_eval, budget, search, early_stop)
    builtin = BuiltinSearch(request, run, callbacks)
    check_phases(builtin.objective, phases)
    with one_voice(run):
        return run_phases(builtin, phases)


def create(
    *,
    model: str = "gan-mlp",
    dataset: str | DatasetRef = "digits",
    data_dir: str | Path | None = None,
    objective: str | None = None,
    n_eval: int | None = None,
    budget: Budget = Budget(),  # noqa: B008 - frozen dataclasses, never mutated
    search: SearchOptions = SearchOptions(),  # noqa: B008
    early_stop: EarlyStop = EarlyStop(),  # noqa: B008
    run: RunOptions = RunOptions(),  # noqa: B008
) -> optuna.Study:
    """Create the study `tune` would run (settings, target, grid queue, the floor), and run no
    trial: `gentune worker` processes, here or on other machines, run it. Arguments as in tune.
    """
    request = _request(model, dataset, data_dir, objective, n_eval, budget, search, early_stop)
    with one_voice(run):
        return BuiltinSearch(request, run).run(execute=False).study


@contextmanager
def one_voice(run: RunOptions) -> Iterator[None]:
    """Around a run: Optuna's own INFO line per trial is silenced, since gentune's progress
    display prints each trial once; and the run's CPU threads (gentune.phases.search.run_threads)
    bound torch and the BLAS and OpenMP pools of NumPy and SciPy (threadpoolctl), which under
    load spun two threads on two busy cores. All as they were before, afterwards."""
    from threadpoolctl import threadpool_limits

    verbosity, threads = optuna.logging.get_verbosity(), torch.get_num_threads()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    limit = run_threads(run)
    try:
        if limit is None:
            yield
        else:
            torch.set_num_threads(limit)
            with threadpool_limits(limits=limit):
                yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        torch.set_num_threads(threads)


def _request(
    model: str,
    dataset: str | DatasetRef,
    data_dir: str | Path | None,
    objective: str | None,
    n_eval: int | None,
    budget: Budget,
    search: SearchOptions,
    early_stop: EarlyStop,
) -> TuneRequest:
    if not isinstance(dataset, DatasetRef):
        dataset = DatasetRef(dataset, None if data_dir is None else str(data_dir))
    return TuneRequest(
        model=model,
        dataset=dataset,
        objective=objective,
        n_eval=n_eval,
        budget=budget,
        search=search,
        early_stop=early_stop,
    )


def run_objective(
    objective: Callable[[optuna.Trial], float],
    *,
    study: str,
    direction: str = "minimize",
    search: SearchOptions = SearchOptions(),  # noqa: B008 - frozen dataclasses, never mutated
    run: RunOptions = RunOptions(),  # noqa: B008
    phases: Phases = Phases(),  # noqa: B008
    objective_spec: str | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> TuneResult:
    """Run a user's own Optuna objective under gentune's runner.

    It gets the same storage, resume, Ctrl-C handling, progress display, phases and outputs
    (best.json, report) as a built-in study. The objective is called unchanged, so code
    written for plain Optuna (`trial.suggest_loguniform` included) works as it is; each trial
    runs with the random generators seeded by the study seed (gentune.trial.user_objective).
    `objective_spec` (FILE.py:FUNC) is stored in the study so that `run.workers` > 1
    processes, or `gentune worker` on another machine, can load the same objective.
    `direction` "minimize,maximize" (two or three joined by commas) makes a multi-objective
    study: the objective returns one value per direction, and `best_trials` is the front.
    `callbacks` are Optuna's trial callbacks, called after every finished trial as in `tune`.
    """
    user = UserSearch(
        objective,
        study=study,
        direction=direction,
        search=search,
        run=run,
        objective_spec=objective_spec,
        callbacks=callbacks,
    )
    check_phases(user.direction, phases)
    with one_voice(run):
        return run_phases(user, phases)


def create_objective(
    objective_spec: str,
    *,
    study: str,
    direction: str = "minimize",
    search: SearchOptions = SearchOptions(),  # noqa: B008 - frozen dataclasses, never mutated
    run: RunOptions = RunOptions(),  # noqa: B008
) -> optuna.Study:
    """Create a study of the objective `objective_spec` (FILE.py:FUNC, with an absolute path, or
    module:func) and run no trial: `gentune worker` processes load the objective and run it."""
    user = UserSearch(
        load_objective(objective_spec),
        study=study,
        direction=direction,
        search=search,
        run=run,
        objective_spec=objective_spec,
    )
    return user.run(execute=False).study
