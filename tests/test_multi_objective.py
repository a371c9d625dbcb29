"""Multi-objective studies (--objective fid,seconds): parsing, the runner, the front, the report."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image
from typer.testing import CliRunner

from gentune.cli import app
from gentune.errors import GentuneError, StudyError
from gentune.families import get_family
from gentune.search.space import SearchSpace
from gentune.search.strategies import make_sampler
from gentune.settings import (
    EarlyStop,
    Phases,
    StudySettings,
    TuneRequest,
    check_objective,
    check_phases,
    resolve_settings,
)
from gentune.study.runner import Runner, value_problem
from gentune.trial.objective import objective_value

pytestmark = pytest.mark.usefixtures("one_thread")

GAN = get_family("gan-mlp")
TEXT = get_family("transformer", "text")


def test_objectives_parse_with_their_directions():
    assert check_objective(GAN, "image", " fid , seconds") == "fid,seconds"
    assert check_objective(GAN, "image", "precision,recall") == "precision,recall"
    assert check_objective(TEXT, "text", "nll,seconds") == "nll,seconds"
    s = StudySettings(objective="fid,precision,seconds")
    assert s.directions == ("minimize", "maximize", "minimize")
    assert s.watched == ("fid", "minimize")
    assert StudySettings(objective="seconds,precision,recall").watched == ("precision", "maximize")
    assert s.to_dict()["directions"] == ["minimize", "maximize", "minimize"]


@pytest.mark.parametrize(
    ("family", "kind", "objective", "rule"),
    [
        (GAN, "image", "fid,fid", "twice"),
        (GAN, "image", "fid,bogus", "unknown objective"),
        (GAN, "image", "fid,kid,precision,seconds", "at most 3"),
        (GAN, "image", "fid,", "empty name"),
        (GAN, "image", "seconds", "cannot rank trials alone"),
        (GAN, "image", "precision", "cannot rank trials alone"),
        (GAN, "image", "precision,seconds", "no objective that measures quality"),
        (GAN, "image", "nll,seconds", "does not apply"),  # the MLP GAN has no likelihood
        (TEXT, "text", "nll,precision", "does not apply"),  # no sample metric on text
    ],
)
def test_objectives_that_make_no_sense_are_refused(family, kind, objective, rule):
    with pytest.raises(GentuneError) as e:
        check_objective(family, kind, objective)
    assert rule in e.value.rule
    assert e.value.value is not None and e.value.fix


def test_multi_objective_settings_turn_pruning_off_and_refuse_a_pruner():
    space = GAN.default_space()
    request = TuneRequest(objective="fid,seconds")
    settings = resolve_settings(request, None, GAN, space)
    assert settings.pruner == "none" and settings.patience is None
    assert settings.detectors  # the failure detectors stay on
    for early in (EarlyStop(pruner="median"), EarlyStop(patience=3)):
        with pytest.raises(GentuneError, match="multi-objective"):
            resolve_settings(TuneRequest(objective="fid,seconds", early_stop=early), None, GAN, space)
    single = resolve_settings(TuneRequest(), None, GAN, space)
    assert single.pruner == "median" and "directions" not in single.to_dict()


def test_phases_that_need_one_best_trial_are_refused():
    check_phases("fid", Phases(confirm=3))
    check_phases("fid,seconds", Phases())
    with pytest.raises(GentuneError, match="--narrow, --confirm build on one best trial"):
        check_phases("fid,seconds", Phases(narrow=True, confirm=2))


def test_objective_value_and_value_checks():
    metrics = {"fid": 2.5, "precision": 0.7}
    s = StudySettings(objective="precision,seconds,fid")
    assert objective_value(s, metrics, loss=1.0, seconds=3.0) == (0.7, 3.0, 2.5)
    assert objective_value(StudySettings(objective="loss"), metrics, loss=1.0) == 1.0
    assert value_problem([1.0, 2.0], n=2) is None
    assert value_problem(1.0, n=2)[1] and value_problem((1.0, 2.0, 3.0), n=2)[1]
    assert value_problem((1.0, float("nan")), n=2) == (
        "the objective returned (1.0, nan); this study has 2 objectives, so it must return 2 finite numbers",
        False,
    )


def test_nsga2_strategy():
    assert type(make_sampler("nsga2", GAN.default_space(), seed=0).sampler).__name__ == "NSGAIISampler"


def test_runner_tells_a_study_two_values_and_stops_on_a_wrong_length():
    sampler = make_sampler("nsga2", SearchSpace({}), seed=0)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        return x, 1 - x

    Runner(study, objective, n_trials=3, timeout=None).run()
    assert [len(t.values) for t in study.trials] == [2, 2, 2]
    with pytest.raises(GentuneError, match="must return 2 finite numbers"):
        Runner(study, lambda trial: 1.0, n_trials=5, timeout=None).run()


@pytest.fixture(scope="module")
def front_study(tmp_path_factory):
    """A 3-trial fid,seconds study on digits through the API, with its report."""
    from gentune import Budget, RunOptions, SearchOptions, tune

    runs = tmp_path_factory.mktemp("runs")
    with pytest.warns(UserWarning, match="prunes no trial"):
        result = tune(
            dataset="digits",
            objective="fid,seconds",
            n_eval=200,
            budget=Budget(steps=50),
            search=SearchOptions(trials=3),
            run=RunOptions(runs_dir=runs, progress=False),
        )
    return runs, result


def test_a_multi_objective_study_stores_two_values_per_trial(front_study):
    _, result = front_study
    study = result.study
    assert study.metric_names == ["fid", "seconds"]
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert done and all(len(t.values) == 2 for t in done)
    for t in done:
        assert t.values[0] == t.user_attrs["metrics"]["fid"]
        assert t.values[1] == t.user_attrs["train_seconds"]
    front = result.best_trials
    assert front and {m["trial"] for m in front} <= {t.number for t in done}
    assert set(front[0]["values"]) == {"fid", "seconds"}
    assert "front" in result.best and "no single best trial" in result.best["note"]


def test_best_prints_the_front_and_sample_asks_for_a_trial(front_study):
    runs, result = front_study
    name = result.study.study_name
    r = CliRunner().invoke(app, ["best", "--study", name, "--runs-dir", str(runs)])
    assert r.exit_code == 0, r.output
    assert "Pareto front of study" in r.output and "seconds" in r.output
    for member in result.best_trials:
        assert str(member["trial"]) in r.output
    saved = json.loads((runs / name / "best.json").read_text())
    assert [m["trial"] for m in saved["front"]] == [m["trial"] for m in result.best_trials]
    r = CliRunner().invoke(
        app, ["sample", "--study", name, "--runs-dir", str(runs), "-o", str(runs / "x.npy")]
    )
    assert isinstance(r.exception, GentuneError) and "--trial N" in r.exception.fix


def test_the_report_draws_the_pareto_front(front_study, tmp_path):
    from gentune.report import write_report
    from gentune.report.plots import FRONT_COLOR, PNG_NAMES

    runs, result = front_study
    name = result.study.study_name
    html = (runs / name / "report.html").read_text()
    assert "Pareto front" in html
    assert "The Pareto front is drawn for 2 or 3 objectives" not in html
    assert "Best Trial" in html  # plot_pareto_front's highlighted front
    assert "A multi-objective study keeps no learning curves" in html
    written = write_report(f"sqlite:///{runs / name / 'study.db'}", name, tmp_path, fmt="png")
    assert [p.name for p in written] == [*PNG_NAMES, "pareto.png"]
    pixels = np.asarray(Image.open(tmp_path / "pareto.png").convert("RGB")).reshape(-1, 3).astype(int)
    front = tuple(int(FRONT_COLOR[i : i + 2], 16) for i in (1, 3, 5))
    assert (np.abs(pixels - front).sum(axis=1) < 30).sum() > 50  # the front is drawn in its colour


def test_a_study_keeps_its_objectives(front_study):
    """A single-objective study refuses a multi-objective rerun, and the other way round."""
    from gentune.api import Budget, RunOptions, SearchOptions, create, tune

    runs, result = front_study
    common = dict(dataset="digits", n_eval=200, budget=Budget(steps=50), search=SearchOptions(trials=3))
    single = create(objective="fid", **common, run=RunOptions(runs_dir=runs, study="single", progress=False))
    assert len(single.directions) == 1 and single.metric_names is None
    with pytest.raises(
        StudyError, match="objective='fid', but this command asks for objective='fid,seconds'"
    ):
        create(objective="fid,seconds", **common, run=RunOptions(runs_dir=runs, study="single"))
    with pytest.raises(
        StudyError, match="objective='fid,seconds', but this command asks for objective='fid'"
    ):
        tune(objective="fid", **common, run=RunOptions(runs_dir=runs, study=result.study.study_name))


def test_the_cli_refuses_a_phase_of_a_multi_objective_study(tmp_path):
    r = CliRunner().invoke(
        app, ["tune", "--objective", "fid,seconds", "--confirm", "2", "--runs-dir", str(tmp_path)]
    )
    assert isinstance(r.exception, GentuneError)
    assert "--confirm builds on one best trial" in r.exception.rule
    assert not any(tmp_path.iterdir())  # refused before any study was made


@pytest.mark.slow
def test_two_workers_run_a_multi_objective_study_on_nsga2(tmp_path):
    """gentune tune --workers 2 on fid,seconds with NSGA-II: every trial holds two values."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--objective", "fid,seconds", "--strategy", "nsga2", "--study", "mo", "--no-report"]
    tiny = ["--trials", "4", "--steps", "50", "--n-eval", "200", "--workers", "2"]
    r = subprocess.run(
        [sys.executable, "-m", "gentune", "tune", *args, *tiny],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Pareto front of study mo" in r.stdout and "prunes no trial" in r.stderr
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'runs/mo/study.db'}")
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) + len(study.get_trials(states=(TrialState.PRUNED,))) == 4
    assert all(len(t.values) == 2 for t in done)


def test_a_users_objective_with_two_directions(tmp_path):
    from gentune.api import RunOptions, SearchOptions, run_objective

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        return x, x * x

    run = RunOptions(runs_dir=tmp_path, progress=False, report=False)
    result = run_objective(
        objective, study="user-mo", direction="minimize, maximize", search=SearchOptions(trials=4), run=run
    )
    assert [d.name for d in result.study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(result.best_trials) == 4  # x and x**2 pull apart: every trial is on the front
    with pytest.raises(GentuneError, match="up to 3 of them"):
        run_objective(objective, study="bad", direction="minimize,upward", run=run)
    with pytest.raises(GentuneError, match="--confirm builds on one best trial"):
        run_objective(
            objective, study="user-mo", direction="minimize,maximize", run=run, phases=Phases(confirm=2)
        )
