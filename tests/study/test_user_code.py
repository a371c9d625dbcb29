"""A user's objective that returns a bad value, calls sys.exit or hangs (issue 14, items 11-12).

Each is checked before Optuna sees it: the trial fails with what went wrong (never left
RUNNING), and the run stops with a GentuneError when the code is plainly wrong.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from gentune.api import RunOptions, SearchOptions, run_objective
from gentune.errors import GentuneError, StudyError
from gentune.study import runner

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "objectives" / "misbehaving.py"


def run(objective, tmp_path: Path, name: str = "u", **search):
    return run_objective(
        objective,
        study=name,
        search=SearchOptions(**{"trials": 2, **search}),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    )


def trials(tmp_path: Path, name: str = "u") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/{name}/study.db").trials


def returning(value):
    def objective(trial):
        trial.suggest_float("x", 0, 1)
        return value

    return objective


@pytest.mark.parametrize(
    "value, words",
    [
        ("0.5", "returned '0.5' (type str)"),
        ((1.0, 2.0), "a tuple of 2 values; this study has one objective"),
        ([0.5], "a list of 1 values"),
        (np.zeros(3), "an array of shape (3,)"),
        (True, "returned True (type bool)"),
        (object(), "(type object)"),
    ],
)
def test_a_value_only_a_bug_returns_stops_the_run_at_once(value, words, tmp_path):
    with pytest.raises(GentuneError, match="trial 0 failed: the objective") as e:
        run(returning(value), tmp_path)
    assert words in str(e.value) and "it must return one finite number" in str(e.value)
    assert "return float(score)" in str(e.value)  # the fix
    [t] = trials(tmp_path)  # one trial, failed with the reason: not RUNNING, not five of them
    assert t.state == TrialState.FAIL and words in t.user_attrs["error"]


@pytest.mark.parametrize(
    "value, words",
    [(float("nan"), "returned nan"), (None, "returned None"), (float("-inf"), "returned -inf")],
)
def test_a_value_that_cannot_be_scored_fails_its_trial_and_says_what_came_back(value, words, tmp_path):
    with pytest.raises(StudyError, match="5 trials in a row failed; the last error was: the objective") as e:
        run(returning(value), tmp_path)
    assert words in str(e.value)  # was "the last error was: None"
    ts = trials(tmp_path)
    assert [t.state for t in ts] == [TrialState.FAIL] * 5
    assert all(words in t.user_attrs["error"] for t in ts)


@pytest.mark.parametrize("value", [3, np.float32(0.25), np.float64(0.5), torch.tensor(0.75), np.array(1.5)])
def test_any_one_finite_number_is_a_value(value, tmp_path):
    r = run(returning(value), tmp_path)
    assert [t.state for t in r.study.trials] == [TrialState.COMPLETE] * 2
    assert r.study.trials[0].value == pytest.approx(float(value))


def test_sys_exit_in_the_objective_fails_the_trial_and_stops_with_a_message(tmp_path):
    def exits(trial):
        trial.suggest_float("x", 0, 1)
        sys.exit(0)

    with pytest.raises(GentuneError, match=r"the objective called sys.exit\(0\)") as e:
        run(exits, tmp_path)
    assert "instead of calling sys.exit()" in str(e.value)
    [t] = trials(tmp_path)
    assert t.state == TrialState.FAIL and "sys.exit(0)" in t.user_attrs["error"]


@pytest.mark.parametrize("how", ["sleep", "busy", "swallows"])
def test_timeout_stops_a_hung_trial_and_queues_it_again(how, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GRACE_MIN_SECONDS", 0.5)

    def hangs(trial):
        trial.suggest_float("x", 0, 1)
        if how == "busy":
            while True:
                pass
        if how == "sleep":
            time.sleep(1000)
        try:
            time.sleep(1000)
        except Exception:  # noqa: BLE001 - the stop must get through an objective's own handler
            return 0.0
        return 1.0

    start = time.monotonic()
    r = run(hangs, tmp_path, timeout=0.5)
    assert time.monotonic() - start < 10  # 0.5 s + 0.5 s of grace, not 1000 s
    stopped, queued = r.study.trials
    assert (
        stopped.state == TrialState.FAIL
        and "still running 0.5 s after the run's timeout" in (stopped.user_attrs["error"])
    )
    # nothing is lost: the next run starts with the stopped trial's parameters
    assert queued.state == TrialState.WAITING and queued.user_attrs["retry_of"] == 0
    assert queued.params == stopped.params


def test_timeout_leaves_a_trial_that_ends_in_time_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "GRACE_MIN_SECONDS", 2.0)

    def slow(trial):
        time.sleep(0.3)
        return trial.suggest_float("x", 0, 1)

    r = run(slow, tmp_path, timeout=0.4, trials=10)  # the second trial runs past 0.4 s, within grace
    assert {t.state for t in r.study.trials} == {TrialState.COMPLETE}
    assert 1 <= len(r.study.trials) <= 3


def gentune(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HANG_SECONDS": "1000"}
    return subprocess.run(
        [sys.executable, "-m", "gentune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_cli_says_what_a_bad_objective_did_with_exit_2(tmp_path):
    for fn, words in [("returns_str", "returned '0.5' (type str)"), ("exits", "called sys.exit(0)")]:
        r = gentune("tune", "--objective-fn", f"{BAD}:{fn}", "--study", fn, "--no-report", cwd=tmp_path)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr and "Should not reach" not in r.stderr
        [t] = trials(tmp_path / "runs", fn)
        assert t.state == TrialState.FAIL


def test_the_cli_stops_a_hung_objective_after_the_timeout_and_says_why(tmp_path):
    start = time.monotonic()
    r = gentune(
        "tune",
        "--objective-fn",
        f"{BAD}:hangs",
        "--timeout",
        "1",
        "--study",
        "h",
        "--no-report",
        cwd=tmp_path,
    )
    assert time.monotonic() - start < 60  # 1 s + 5 s of grace, and Python's start
    assert r.returncode == 0, r.stderr
    assert "--timeout 1 s: trial 0 was still running 5 s after it and was stopped" in r.stderr
    stopped, queued = trials(tmp_path / "runs", "h")
    assert stopped.state == TrialState.FAIL and queued.state == TrialState.WAITING
