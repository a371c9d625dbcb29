"""The study runner: storage, resume, Ctrl-C and SIGKILL recovery, user objectives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, run_objective, tune
from gentune.errors import StudyError
from gentune.settings import StudySettings
from gentune.study.store import open_or_create

HERE = Path(__file__).resolve().parents[1]
SLOW = HERE / "objectives" / "slow_quadratic.py"


def quad(trial):
    return (trial.suggest_float("x", -10, 10) - 2) ** 2


def states(storage: str, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=storage)
    out: dict[str, int] = {}
    for t in study.trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def test_rerun_resumes_to_the_requested_count(tmp_path):
    r = run_objective(
        quad, study="q", search=SearchOptions(trials=3), run=RunOptions(runs_dir=tmp_path, progress=False)
    )
    assert len(r.study.trials) == 3
    r = run_objective(
        quad, study="q", search=SearchOptions(trials=5), run=RunOptions(runs_dir=tmp_path, progress=False)
    )
    assert len(r.study.trials) == 5  # 2 more, not 5 more
    assert (tmp_path / "q" / "study.db").exists() and (tmp_path / "q" / "best.json").exists()


def test_failing_trials_do_not_count_and_stop_after_a_streak(tmp_path):
    calls = {"n": 0}

    def flaky(trial):
        calls["n"] += 1
        x = trial.suggest_float("x", 0, 1)
        if calls["n"] % 2 == 0:
            raise RuntimeError("out of memory (simulated)")
        return x

    r = run_objective(
        flaky, study="f", search=SearchOptions(trials=4), run=RunOptions(runs_dir=tmp_path, progress=False)
    )
    done = [t for t in r.study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in r.study.trials if t.state == TrialState.FAIL]
    assert len(done) == 4 and len(failed) == 3
    assert "out of memory" in failed[0].user_attrs["error"]

    def broken(trial):
        trial.suggest_float("x", 0, 1)
        raise ValueError("bug")

    with pytest.raises(StudyError, match="5 trials in a row failed.*bug"):
        run_objective(
            broken,
            study="b",
            search=SearchOptions(trials=4),
            run=RunOptions(runs_dir=tmp_path, progress=False),
        )


def test_settings_mismatch_on_resume_names_the_field(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    open_or_create("s", url, settings=StudySettings(steps=100))
    open_or_create("s", url, settings=StudySettings(steps=100))  # same settings: fine
    with pytest.raises(StudyError, match=r"steps=100.*steps=200.*--study NAME"):
        open_or_create("s", url, settings=StudySettings(steps=200))
    with pytest.raises(StudyError, match="no study named 'other'"):
        open_or_create("other", url)


def _cli(tmp_path, *args, env_extra=None):
    env = {**os.environ, "SLOW_SECONDS": "1.0", **(env_extra or {})}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gentune",
            "tune",
            "--objective-fn",
            f"{SLOW}:objective",
            "--study",
            "slow",
            "--runs-dir",
            str(tmp_path),
            "--no-report",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # Ctrl-C as a terminal delivers it: a suite started in the background (nohup, `&`)
        # hands its children SIGINT ignored, and Python then keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_running_trial(storage: str, min_complete: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    db = Path(storage.removeprefix("sqlite:///"))
    while time.monotonic() < deadline:
        if not db.exists():
            time.sleep(0.05)
            continue
        try:
            study = optuna.load_study(study_name="slow", storage=storage)
            trials = study.get_trials(deepcopy=False)
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs]
            if len(done) >= min_complete and running:
                return running[0]
        except Exception:  # noqa: BLE001 - the child may still be creating the study
            pass
        time.sleep(0.05)
    raise AssertionError("no running trial appeared")


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_interrupted_study_resumes_with_the_same_parameters(tmp_path, how):
    storage = f"sqlite:///{tmp_path}/slow/study.db"
    # Trials of 2 s: the signal, sent 0.2 s after the poll saw the trial running, lands inside
    # it even on a loaded machine (with 1 s trials a fresh clone's CI run once saw it complete).
    slow = {"SLOW_SECONDS": "2.0"}
    proc = _cli(tmp_path, "--trials", "4", env_extra=slow)
    running = _wait_for_running_trial(storage, min_complete=1)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    if how == "sigint":
        assert proc.returncode == 130, stderr
        assert "rerun the same command" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL

    proc = _cli(tmp_path, "--trials", "4", env_extra=slow)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    study = optuna.load_study(study_name="slow", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    stopped = study.trials[running.number]
    assert stopped.state == TrialState.FAIL
    if how == "sigint":
        assert stopped.user_attrs.get("interrupted") is True
    retried = [t for t in complete if t.user_attrs.get("retry_of") == running.number]
    # The retry repeats every parameter the stopped trial had drawn (a stop between two
    # suggestions leaves the later ones to the retry).
    assert len(retried) == 1 and stopped.params and retried[0].params.items() >= stopped.params.items()


def test_trial_seconds_caps_training_and_is_stored(tmp_path):
    from gentune.errors import GentuneError

    r = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=10**6, trial_seconds=1.0),
        search=SearchOptions(trials=2),
        early_stop=EarlyStop(evals=0),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False, study="capped"),
    )
    assert r.study.user_attrs["gentune"]["trial_seconds"] == 1.0
    for t in r.study.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["stop_reason"] == "max_seconds"
        assert 0 < t.user_attrs["steps"] < 10**6
    with pytest.raises(GentuneError, match="--trial-seconds must be a positive"):
        tune(
            dataset="digits",
            budget=Budget(trial_seconds=0),
            run=RunOptions(runs_dir=tmp_path, progress=False),
        )


def test_a_signal_between_trials_stops_the_run_before_the_next_one(tmp_path):
    """Ctrl-C that lands in Optuna's or gentune's bookkeeping (here: an after-trial callback)
    is held until the trial is told, then stops the run: the trial stays complete and no
    heartbeat thread is left to keep the process alive."""
    import threading

    def interrupt(study, trial):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs here; the callback must still finish
        trial_states.append(trial.state)

    trial_states: list[TrialState] = []
    url = f"sqlite:///{tmp_path}/study.db"
    with pytest.raises(Exception) as caught:
        run_objective(
            quad,
            study="i",
            search=SearchOptions(trials=3),
            run=RunOptions(storage=url, runs_dir=tmp_path, progress=False),
            callbacks=[interrupt],
        )
    assert type(caught.value).__name__ == "Interrupted" and caught.value.trial_number is None
    assert trial_states == [TrialState.COMPLETE]
    assert states(url, "i") == {"COMPLETE": 1}
    others = [t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon]
    assert others == []  # a live heartbeat thread would keep the process from exiting
