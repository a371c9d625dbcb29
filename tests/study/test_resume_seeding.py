"""Issue 14, items 5 and 6: a resumed study, or two processes on one study, never draw a
configuration again that the sampler would not have drawn anyway (random, QMC and TPE), while a
fresh single-process study keeps the stream its --seed gave."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gentune.api import RunOptions, SearchOptions, run_objective
from gentune.search.strategies import TrialIndexedQMCSampler
from gentune.settings import UserSettings
from gentune.study.runner import Interrupted
from gentune.study.store import (
    open_or_create,
)
from gentune.study.targets import target_of
from gentune.trial.attrs import TrialKey

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ROOT / "tests" / "objectives"
STRATEGIES = ["random", "qmc", "tpe"]


def objective(trial: optuna.Trial) -> float:
    """Two continuous parameters and a choice: any repeat is a repeated draw, not chance."""
    x = trial.suggest_float("x", -5, 5)
    lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    opt = trial.suggest_categorical("opt", ["adam", "sgd"])
    return x**2 + abs(lr - 1e-3) + (opt == "sgd")


def run(tmp_path: Path, strategy: str, trials: int, study: str = "s", fn=objective) -> optuna.Study:
    return run_objective(
        fn,
        study=study,
        search=SearchOptions(strategy=strategy, trials=trials),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    ).study


def drawn(study: optuna.Study) -> list[tuple]:
    """The parameters of the study's trials that drew them (queued re-runs left out)."""
    return [
        tuple(sorted(t.params.items()))
        for t in study.get_trials(deepcopy=False)
        if t.params and TrialKey.RETRY_OF not in t.user_attrs
    ]


def plain_optuna(sampler: optuna.samplers.BaseSampler, trials: int) -> list[tuple]:
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return drawn(study)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fresh_study_keeps_the_stream_its_seed_gave(tmp_path, strategy):
    """A single process on an empty study draws exactly what the strategy's sampler seeded
    with --seed draws, as before the fix: results stay reproducible."""
    samplers = {
        "random": lambda: optuna.samplers.RandomSampler(seed=0),
        "tpe": lambda: optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, constant_liar=True),
        "qmc": lambda: TrialIndexedQMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=0,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=0),
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        expected = plain_optuna(samplers[strategy](), 3)
    assert drawn(run(tmp_path, strategy, 3)) == expected


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_resumed_study_does_not_draw_its_trials_again(tmp_path, strategy):
    """The issue's repro: --trials 2, then --trials 4 on the same study drew trials 2-3 equal
    to 0-1. Now they are new, and the first two are those of a study run in one go."""
    run(tmp_path / "a", strategy, 2)
    resumed = drawn(run(tmp_path / "a", strategy, 4))
    assert len(resumed) == 4 and len(set(resumed)) == 4
    one_go = drawn(run(tmp_path / "b", strategy, 4))
    assert resumed[:2] == one_go[:2]
    if strategy == "qmc":  # point i goes to trial i, however the study was run
        assert resumed == one_go


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_study_resumed_after_ctrl_c_draws_new_configurations(tmp_path, strategy):
    """After Ctrl-C the stopped trial runs again with its parameters (queued); every trial
    drawn after it is new."""
    calls = {"n": 0}

    def interrupted_second(trial):
        calls["n"] += 1
        value = objective(trial)
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return value

    with pytest.raises(Interrupted):
        run(tmp_path, strategy, 4, fn=interrupted_second)
    study = run(tmp_path, strategy, 4)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert any(t.user_attrs.get(TrialKey.RETRY_OF) == 1 for t in complete)
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == 4


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes_on_one_study_draw_different_configurations(tmp_path, strategy):
    """Two processes of worker index 0 (two `gentune tune` commands) take turns on one study,
    each asking for a trial while the other's still runs: 6 different configurations (the
    issue saw trials 0=1, 2=3, 4=5)."""
    url = f"sqlite:///{tmp_path}/conc.db"
    settings = UserSettings(strategy=strategy, direction="minimize", seed=0, space={}, objective_fn=None)
    created = open_or_create("conc", url, settings=settings)
    procs = [open_or_create("conc", url, sampler=target_of(created).sampler(0)) for _ in range(2)]
    for _ in range(3):
        asked = [(p, p.ask()) for p in procs]  # both running at once
        for p, trial in asked:
            p.tell(trial, objective(trial))
    params = drawn(created)
    assert len(params) == 6 and len(set(params)) == 6, params


def test_two_gentune_tune_processes_on_one_study_do_not_duplicate(tmp_path):
    """The issue's repro as a user runs it: two identical commands at the same time."""
    cmd = [
        sys.executable,
        "-m",
        "gentune",
        "tune",
        "--objective-fn",
        f"{OBJECTIVES / 'slow_quadratic.py'}:objective",
        "--strategy",
        "random",
        "--trials",
        "6",
        "--study",
        "conc",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
    ]
    env = {**os.environ, "SLOW_SECONDS": "0.3", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        _, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr.decode()
    study = optuna.load_study(study_name="conc", storage=f"sqlite:///{tmp_path}/conc/study.db")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    xs = [t.params["x"] for t in complete]
    assert len(xs) >= 6 and len(set(xs)) == len(xs), xs
    workers = {t.user_attrs[TrialKey.WORKER] for t in complete}
    assert len(workers) == 2  # both processes ran trials: the check above is about them
