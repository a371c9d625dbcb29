"""Issue 14, item 10: a configuration whose process dies (killed, out of memory) is queued again
at most MAX_RETRIES times, then failed with the reason; Ctrl-C does not count."""

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

from gentune.api import RunOptions, SearchOptions, run_objective
from gentune.settings import UserSettings
from gentune.study.runner import Interrupted
from gentune.study.store import (
    MAX_RETRIES,
    host_name,
    make_storage,
    open_or_create,
    recover_orphans,
    requeue,
)
from gentune.trial.attrs import TrialKey

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ROOT / "tests" / "objectives"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _user_study(tmp_path: Path) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path}/r.db"
    settings = UserSettings(strategy="random", direction="minimize", seed=0, space={}, objective_fn=None)
    open_or_create("r", url, settings=settings)
    return url, open_or_create("r", url)


def test_parameters_that_kill_their_worker_are_retried_three_times(tmp_path):
    """A trial whose process died is queued again at most MAX_RETRIES times; then it is failed
    with the reason, and the study goes on without it."""
    _, study = _user_study(tmp_path)
    dead = f"{host_name()}:{_dead_pid()}"
    numbers = []
    for _ in range(MAX_RETRIES + 1):
        trial = study.ask()  # the first draws; the others pop the re-queued parameters
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(TrialKey.WORKER, dead)
        assert recover_orphans(study) == [trial.number]
        numbers.append(trial.number)
    trials = study.get_trials(deepcopy=False)
    assert [trials[n].user_attrs.get(TrialKey.RETRIES, 0) for n in numbers] == [0, 1, 2, 3]
    assert len({trials[n].params["x"] for n in numbers}) == 1
    assert all(trials[n].state == TrialState.FAIL for n in numbers)
    last = trials[numbers[-1]].user_attrs[TrialKey.ERROR]
    assert "its process ended mid-trial" in last and "not queued again" in last
    assert "not queued again" not in trials[numbers[0]].user_attrs[TrialKey.ERROR]
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def test_a_lost_heartbeat_counts_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("GENTUNE_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("GENTUNE_HEARTBEAT_GRACE", "2")
    url, _ = _user_study(tmp_path)
    study = optuna.load_study(study_name="r", storage=make_storage(url))
    fresh, worn = study.ask(), study.ask()
    for trial in (fresh, worn):
        trial.suggest_float("x", 0, 1)
        study._storage.record_heartbeat(trial._trial_id)
    study._storage.set_trial_user_attr(worn._trial_id, TrialKey.RETRIES, MAX_RETRIES)
    time.sleep(3.2)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[fresh.number].state == trials[worn.number].state == TrialState.FAIL
    assert trials[fresh.number].user_attrs[TrialKey.ERROR].startswith("its worker stopped sending heartbeats")
    assert "not queued again" in trials[worn.number].user_attrs[TrialKey.ERROR]
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [(t.user_attrs[TrialKey.RETRY_OF], t.user_attrs[TrialKey.RETRIES]) for t in waiting] == [
        (fresh.number, 1)
    ]


def test_ctrl_c_does_not_count_against_the_cap(tmp_path):
    """An interrupted trial is not a crashing one: its re-queued copy keeps its count."""
    url, study = _user_study(tmp_path)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, state=TrialState.FAIL)
    assert requeue(study, study.trials[trial.number])
    assert requeue(study, study.trials[trial.number], crashed=False) is True

    def stopped(t):
        t.suggest_float("x", 0, 1)
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_objective(
            stopped,
            study="r",
            search=SearchOptions(strategy="random", trials=3),
            run=RunOptions(storage=url, runs_dir=tmp_path, progress=False, report=False),
        )
    waiting = optuna.load_study(study_name="r", storage=url).get_trials(states=(TrialState.WAITING,))
    assert sorted(t.user_attrs.get(TrialKey.RETRIES, 0) for t in waiting) == [0, 1]


@pytest.mark.slow
def test_a_configuration_that_kills_every_worker_stops_looping(tmp_path):
    """The issue's loop, with real SIGKILLs: the poisoned parameters run 4 times (3 retries),
    are failed with the reason, and the next run finishes the study with other parameters."""
    poison = tmp_path / "poison"
    cmd = [
        sys.executable,
        "-m",
        "gentune",
        "tune",
        "--objective-fn",
        f"{OBJECTIVES / 'poisoned.py'}:objective",
    ]
    cmd += [
        "--strategy",
        "random",
        "--trials",
        "1",
        "--study",
        "p",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POISON_FILE": str(poison)}
    codes = []
    for _ in range(MAX_RETRIES + 3):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        codes.append(r.returncode)
        if r.returncode == 0:
            break
    assert codes == [-signal.SIGKILL] * (MAX_RETRIES + 1) + [0], r.stderr
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path}/p/study.db")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == MAX_RETRIES + 1 and len({t.params["x"] for t in failed}) == 1
    assert "not queued again" in failed[-1].user_attrs[TrialKey.ERROR]
    (done,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done.params["x"] != failed[0].params["x"]
    best = subprocess.run(
        [sys.executable, "-m", "gentune", "best", "--study", "p", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert f"{MAX_RETRIES + 1} failed" in best.stdout, best.stdout
