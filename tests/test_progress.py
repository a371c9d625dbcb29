"""What a run says while it works: the start banner, the extractor's training and the floor, the
value measured during training, other workers' trials, and each trial once from the Python API."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from typer.testing import CliRunner

from gentune import RunOptions, SearchOptions, run_objective
from gentune.cli import app
from gentune.device import busy_cores
from gentune.metrics import Evaluator
from gentune.metrics import features as features_module
from gentune.metrics.evaluator import FLOOR_STAGE
from gentune.metrics.features import TRAIN_STAGE
from gentune.progress import TrialProgress
from gentune.settings import cpu_threads, population_threads
from gentune.study.workers import _Reporter
from gentune.trial.attrs import TrialKey

OBJECTIVE = str(Path(__file__).parent / "objectives" / "noisy_quadratic.py") + ":objective"


def plain(total: int | None = 3) -> tuple[TrialProgress, io.StringIO]:
    out = io.StringIO()
    return TrialProgress(total, metric="fid", console=Console(file=out, soft_wrap=True)), out


def test_the_banner_names_the_study_its_storage_outputs_and_the_resume_command(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    args = ["tune", "--objective-fn", OBJECTIVE, "--trials", "2", "--study", "talk", "--runs-dir", str(runs)]
    monkeypatch.setattr("sys.argv", ["gentune", *args, "--no-report"])  # what the command line held
    result = CliRunner().invoke(app, [*args, "--no-report"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "study talk" in lines
    assert f"  storage: sqlite:///{runs}/talk/study.db" in lines
    assert f"  outputs: {runs}/talk/" in lines
    resume = next(line for line in lines if line.startswith("  resume:  "))
    assert resume.startswith(f"  resume:  gentune tune --objective-fn {OBJECTIVE} --trials 2 --study talk")


def test_the_api_prints_each_trial_once_and_restores_optuna_and_torch(tmp_path, capfd):
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append((optuna.logging.get_verbosity(), torch.get_num_threads()))
        return trial.suggest_float("x", -1, 1) ** 2

    verbosity, threads = optuna.logging.get_verbosity(), torch.get_num_threads()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        run_objective(
            objective,
            study="once",
            search=SearchOptions(trials=3),
            run=RunOptions(runs_dir=tmp_path, report=False),
        )
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # as the caller had it
    finally:
        optuna.logging.set_verbosity(verbosity)
    assert torch.get_num_threads() == threads
    err = capfd.readouterr().err
    for number in range(3):
        assert sum(line.startswith(f"trial {number} complete") for line in err.splitlines()) == 1, err
    assert "finished with value" not in err  # Optuna's own line for the same trial
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    assert all(v == optuna.logging.WARNING for v, _ in seen)
    # The run's CPU threads follow cpu_threads (the load may move by one core meanwhile).
    assert all(abs(t - cpu_threads(os.cpu_count() or 1, load)) <= 1 for _, t in seen)


def test_cpu_threads_is_one_on_two_cores_and_never_above_half_the_cores():
    assert cpu_threads(2, 0.0) == cpu_threads(2, 9.0) == 1
    assert cpu_threads(16, 0.0) == 8 and cpu_threads(16, 15.5) == 1


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="busy_cores reads Linux's /proc/stat")
def test_busy_cores_sees_a_process_that_spins_and_a_population_leaves_it_its_core():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    cores = os.cpu_count() or 1
    assert busy is not None and 0.6 <= busy <= cores
    assert population_threads(cores, busy) <= max(1, cores - 1)
    assert population_threads(2, 0.1) == 2  # an idle 2-core machine: both, unlike cpu_threads


def test_the_extractor_training_and_the_floor_report_their_progress(digits, tmp_path, monkeypatch):
    # A few steps instead of ~1000: the calls are what is checked, not the extractor.
    monkeypatch.setattr(features_module, "_TRAIN_STEPS", 10)
    monkeypatch.setattr(features_module, "_MIN_EPOCHS", 1)
    calls: list[tuple[str, int, int]] = []
    Evaluator(digits, n=200, cache_dir=tmp_path, progress=lambda *c: calls.append(c)).prepare()
    training = [c for c in calls if c[0] == TRAIN_STAGE]
    total = training[-1][2]
    assert [c[1] for c in training] == list(range(1, total + 1)) and total >= 10
    assert [c for c in calls if c[0] == FLOOR_STAGE] == [(FLOOR_STAGE, 0, 2), (FLOOR_STAGE, 2, 2)]
    calls.clear()  # cached now: nothing trains, and library use without progress stays silent
    Evaluator(digits, n=200, cache_dir=tmp_path, progress=lambda *c: calls.append(c)).prepare()
    assert [c[0] for c in calls] == [FLOOR_STAGE, FLOOR_STAGE]


def test_plain_progress_shows_the_stages_and_the_value_measured_during_training():
    bar, out = plain()
    for done in range(0, 101):
        bar.prepare("training the feature extractor", done, 100)
    bar.trial_started(0, {"lr": 0.1})
    bar.evaluated(250, 12.5)
    bar.step(300, 1000)
    text = out.getvalue()
    assert text.startswith("training the feature extractor ...\n  25/100\n  50/100\n  75/100\n")
    assert "training the feature extractor: done in " in text
    assert "  step 300/1000, fid 12.5 at step 250" in text
    bar.trial_started(1, {"lr": 0.2})  # a new trial shows no value of the last one
    bar.step(300, 1000)
    assert out.getvalue().endswith("  step 300/1000\n")


def test_workers_progress_shows_running_trials_and_why_trials_were_pruned(capsys):
    study = optuna.create_study()
    pruned, running = study.ask(), study.ask()
    reporter = _Reporter(True, study, 4, "fid")  # what finished before it is not news
    pruned.report(40.0, 500)
    pruned.set_user_attr(TrialKey.PRUNE_REASON, "mode_collapse")
    pruned.set_user_attr(TrialKey.WORKER, "host:1")
    study.tell(pruned, state=TrialState.PRUNED)
    running.report(7.5, 1000)
    with reporter:
        reporter.update()
        reporter.update()  # nothing new: nothing printed twice
    err = capsys.readouterr().err
    assert "trial 0 pruned: fid=40 (mode_collapse, worker host:1)" in err
    assert err.count("  trial 1 at step 1000: fid=7.5") == 1


def test_workers_progress_does_not_count_a_promotion_as_one_of_the_trials(capsys):
    study = optuna.create_study()
    reporter = _Reporter(True, study, 2, "fid")
    study.add_trial(optuna.trial.create_trial(value=3.0, params={}, distributions={}))
    study.add_trial(
        optuna.trial.create_trial(
            value=2.0, params={}, distributions={}, user_attrs={"promoted_from": 0, "rung": 1}
        )
    )
    with reporter:
        reporter.update()
    err = capsys.readouterr().err
    assert "trial 0 complete: fid=3 (worker ?)  |  1/2 done" in err
    assert "trial 1 complete: fid=2 (rung 1, continued trial 0, worker ?)  |  1/2 done" in err


@pytest.mark.parametrize("total", [None, 3])
def test_prepare_without_a_study_total_prints_its_end_line(total):
    bar, out = plain(total)
    bar.prepare("scoring the floor", 0, 2)
    bar.prepare("scoring the floor", 2, 2)
    assert out.getvalue().splitlines()[0] == "scoring the floor ..."
    assert out.getvalue().splitlines()[-1].startswith("scoring the floor: done in ")


def test_the_live_display_shows_the_same_things():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, soft_wrap=True)
    with TrialProgress(2, metric="fid", console=console) as bar:
        for done in range(3):
            bar.prepare("scoring the floor", done, 2)
        bar.trial_started(0, {})
        bar.evaluated(500, 3.25)
        bar.step(600, 1000)
        assert "fid 3.25 at step 500" in str(bar._bars.progress.tasks[1].fields["info"])
        bar.running({4: (500, 2.5, 1000), 5: (2000, 1.5, 2667)})
        assert bar._bars.progress.tasks[1].total == 3667
        bar.running({})
    assert "scoring the floor: done in " in out.getvalue()


def test_gentune_create_shows_the_extractor_training_it_does(tmp_path, monkeypatch):
    monkeypatch.setattr(features_module, "_TRAIN_STEPS", 10)
    monkeypatch.setattr(features_module, "_MIN_EPOCHS", 1)
    monkeypatch.setenv("GENTUNE_HOME", str(tmp_path / "home"))  # nothing cached
    args = ["create", "--dataset", "digits", "--steps", "60", "--n-eval", "200", "--runs-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{TRAIN_STAGE} ..." in result.output
    assert f"{TRAIN_STAGE}: done in " in result.output
    assert f"{FLOOR_STAGE}: done in " in result.output
