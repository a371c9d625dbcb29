"""Tracker hooks: Optuna callbacks through tune() and run_objective()."""

from __future__ import annotations

import optuna
import pytest

from gentune import RunOptions, SearchOptions, run_objective
from gentune.errors import GentuneError


def complete_prune_fail(trial: optuna.Trial) -> float:
    """Trial 1 is pruned and trial 2 fails; the others complete."""
    x = trial.suggest_float("x", 0, 1)
    if trial.number == 1:
        raise optuna.TrialPruned("pruned on purpose")
    if trial.number == 2:
        raise ValueError("failed on purpose")
    return x


class Recorder:
    def __init__(self):
        self.seen: list[tuple[str, int, str]] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.seen.append((study.study_name, trial.number, trial.state.name))


def test_callbacks_see_every_finished_trial_as_optuna_calls_them(tmp_path):
    gentune_calls = Recorder()
    result = run_objective(
        complete_prune_fail,
        study="cb",
        search=SearchOptions(strategy="random", trials=3),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
        callbacks=[gentune_calls],
    )
    optuna_calls = Recorder()
    plain = optuna.create_study(study_name="cb")
    plain.optimize(complete_prune_fail, n_trials=4, callbacks=[optuna_calls], catch=(ValueError,))
    assert gentune_calls.seen == optuna_calls.seen
    assert [s for _, _, s in gentune_calls.seen] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    # Each was called after the trial was stored as finished, as Optuna does.
    assert [t.state.name for t in result.study.trials] == [s for _, _, s in gentune_calls.seen]


def test_callbacks_are_refused_with_worker_processes(tmp_path):
    with pytest.raises(GentuneError, match="workers > 1 run the trials in other processes"):
        run_objective(
            complete_prune_fail,
            study="cbw",
            run=RunOptions(runs_dir=tmp_path, workers=2, progress=False),
            callbacks=[Recorder()],
        )
    with pytest.raises(GentuneError, match="must be callable"):
        run_objective(complete_prune_fail, study="cbx", run=RunOptions(runs_dir=tmp_path), callbacks=["no"])
    assert not (tmp_path / "cbw").exists() and not (tmp_path / "cbx").exists()


def test_the_cli_refuses_mlflow_where_no_trial_runs_here(tmp_path):
    """Refused before MLflow is imported or a study is made."""
    from typer.testing import CliRunner

    from gentune.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for args, message in (
        (["create", "--mlflow", uri], "gentune create runs no trial"),
        (["tune", "--workers", "2", "--mlflow", uri], "--workers runs them in other processes"),
    ):
        with pytest.raises(GentuneError, match=message):
            CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs")], catch_exceptions=False)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_callbacks_see_every_trial_a_population_finishes(tmp_path):
    from gentune import Budget, EarlyStop, tune

    seen = Recorder()
    result = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=20),
        search=SearchOptions(trials=3, population=2, promotion=False),
        early_stop=EarlyStop(evals=0),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False, noise_seeds=0),
        callbacks=[seen],
    )
    finished = [t for t in result.study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert sorted(n for _, n, _ in seen.seen) == sorted(t.number for t in finished)
    assert len(finished) >= 3
