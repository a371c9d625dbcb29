"""Many workers on one study: killed workers, grid points handed out once, a database restart.

The workers are real `gentune` processes sharing a real storage: a throw-away PostgreSQL
server (tests/pg_fixture.py), Optuna's journal file, or SQLite. The objective sleeps a moment
per trial, so a worker can be killed mid-trial.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg_fixture import wait_until

from gentune.study.storage import journal_path, rdb_url
from gentune.study.store import make_storage
from gentune.study.workers import default_threads, parse_gpus, worker_devices

HERE = Path(__file__).resolve().parents[1]
OBJECTIVE = f"{HERE / 'objectives' / 'logged_quadratic.py'}:objective"
FAST_HEARTBEAT = {"GENTUNE_HEARTBEAT_INTERVAL": "1", "GENTUNE_HEARTBEAT_GRACE": "3"}


def gentune(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gentune", *args],
        cwd=cwd,
        env={**os.environ, "SLOW_SECONDS": "1.0", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out + err


@functools.cache
def _storage(url: str):
    return make_storage(url)  # one connection pool per URL, however often the tests poll


def load(storage: str, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(storage))


def by_state(study: optuna.Study, state: TrialState) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state == state]


def running_trial_of(storage: str, host: str, min_complete: int = 1):
    """A trial that `host`'s worker is running, once `min_complete` trials are done."""

    def find():
        study = load(storage)
        if len(by_state(study, TrialState.COMPLETE)) < min_complete:
            return None
        return next(
            (
                t
                for t in by_state(study, TrialState.RUNNING)
                if t.user_attrs.get("worker", "").startswith(host + ":")
            ),
            None,
        )

    return wait_until(find, 90, f"a running trial of worker {host}")


def assert_complete_once(study: optuna.Study, n: int, states=(TrialState.COMPLETE,)) -> list:
    """Exactly n completed (or `states`) trials, none of them a duplicate of another."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state in states]
    assert len(done) == n, Counter(t.state.name for t in study.trials)
    keys = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(keys)) == n, f"duplicated configurations: {Counter(keys).most_common(3)}"
    return done


# -- settings and URLs ---------------------------------------------------------------------


def test_threads_and_gpus_are_split_between_workers():
    assert default_threads(2, cpus=2) == 1 and default_threads(3, cpus=16) == 5
    assert worker_devices(4, "auto", gpus=[0, 1]) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_devices(2, "auto", n_cuda=3) == ["cuda:0", "cuda:1"]
    assert worker_devices(2, "cpu", n_cuda=3) == ["cpu", "cpu"]  # an explicit device stays
    assert parse_gpus("1,3") == [1, 3] and parse_gpus(None) is None


def test_storage_urls(tmp_path):
    assert rdb_url("postgresql://u:p@h:5432/db").startswith("postgresql+psycopg://")
    assert rdb_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert rdb_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert rdb_url("sqlite:///x.db") == "sqlite:///x.db"
    assert journal_path("journal:///shared/s.log") == Path("/shared/s.log")
    assert journal_path(f"{tmp_path}/s.log") == tmp_path / "s.log"
    assert journal_path("sqlite:///x.log") is None
    storage = make_storage(f"journal://{tmp_path}/sub/s.log")  # folder created
    study = optuna.create_study(storage=storage, study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(load(f"{tmp_path}/sub/s.log", "j").trials) == 2


def test_unreachable_database_is_a_clear_error():
    from gentune.errors import StudyError

    with pytest.raises(StudyError, match="(?s)cannot open the storage.*:\\*\\*\\*@.*database server runs"):
        make_storage(f"postgresql://u:secret@127.0.0.1:{_closed_port()}/db")


def _closed_port() -> int:
    from pg_fixture import free_port

    return free_port()


# -- a killed worker loses nothing ----------------------------------------------------------


@pytest.fixture(params=["postgresql", "journal"])
def shared_storage(request, tmp_path):
    if request.param == "journal":
        return f"journal://{tmp_path}/study.log"
    return request.getfixturevalue("postgres").create_database()


def test_sigkilled_worker_trial_is_retried_and_nothing_is_lost(shared_storage, tmp_path):
    """Three 'machines' (distinct GENTUNE_HOST) share a study; one is killed with SIGKILL.

    Its trial is found by its lapsed heartbeat (not by pid: it looks like another machine),
    failed and queued again with the same parameters; the study ends with exactly 9 trials.
    """
    log = tmp_path / "evals.txt"
    env = {**FAST_HEARTBEAT, "EVAL_LOG": str(log)}
    # create the study (target 9) without running a trial, then start worker b alone, so that
    # it surely holds a trial when it is killed, however slowly the processes start
    finish(
        gentune(
            "create",
            "--objective-fn",
            OBJECTIVE,
            "--study",
            "s",
            "--storage",
            shared_storage,
            "--strategy",
            "random",
            "--runs-dir",
            str(tmp_path),
            "--no-report",
        )
    )

    def worker(host: str, index: int, seconds: str) -> subprocess.Popen:
        return gentune(
            "worker",
            "--study",
            "s",
            "--storage",
            shared_storage,
            "--trials",
            "9",
            "--no-progress",
            "--runs-dir",
            str(tmp_path),
            "--worker-index",
            str(index),
            env={**env, "GENTUNE_HOST": host, "SLOW_SECONDS": seconds},
        )

    b = worker("b", 1, "30")  # a long trial: it is killed in the middle of it
    victim = running_trial_of(shared_storage, "b", min_complete=0)
    b.send_signal(signal.SIGKILL)
    b.wait(timeout=30)
    survivors = [worker("a", 0, "1"), worker("c", 2, "1")]
    for proc in survivors:
        finish(proc)

    study = load(shared_storage)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    # The kill can land between two suggest calls: the retry keeps what was suggested and draws
    # the rest.
    assert killed.params.items() <= retries[0].params.items()
    assert_complete_once(study, 9)
    evaluated = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert all(n == 1 for n in evaluated.values())  # each trial number evaluated once
    assert {t.user_attrs["worker"].split(":")[0] for t in by_state(study, TrialState.COMPLETE)} == {"a", "c"}


def test_supervisor_restarts_a_killed_worker(tmp_path):
    """`gentune tune --workers 2`: a worker killed mid-trial is restarted; its trial re-queued."""
    storage = f"sqlite:///{tmp_path}/s/study.db"
    proc = gentune(
        "tune",
        "--objective-fn",
        OBJECTIVE,
        "--study",
        "s",
        "--workers",
        "2",
        "--strategy",
        "random",
        "--trials",
        "6",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
        env={"SLOW_SECONDS": "2"},
    )  # long enough to kill a worker mid-trial
    host = __import__("socket").gethostname()
    victim = running_trial_of(storage, host)
    os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
    output = finish(proc)
    assert "restarting it" in output
    study = load(storage)
    assert study.trials[victim.number].state == TrialState.FAIL
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert [t.params for t in retries] == [victim.params]
    assert_complete_once(study, 6)


# -- grid points are handed out once ------------------------------------------------------


def test_grid_over_three_workers_evaluates_each_point_once(postgres, tmp_path):
    storage = postgres.create_database()
    space = tmp_path / "grid.yaml"
    space.write_text("params:\n  x: [-1.0, 0.0, 1.0, 2.0]\n  y: [0, 1, 2]\n")
    log = tmp_path / "evals.txt"
    proc = gentune(
        "tune",
        "--objective-fn",
        OBJECTIVE,
        "--study",
        "s",
        "--storage",
        storage,
        "--strategy",
        "grid",
        "--space",
        str(space),
        "--workers",
        "3",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
        env={"EVAL_LOG": str(log), "SLOW_SECONDS": "0.3"},
    )
    finish(proc)
    study = load(storage)
    points = set(itertools.product([-1.0, 0.0, 1.0, 2.0], [0, 1, 2]))
    done = assert_complete_once(study, len(points))
    assert {(t.params["x"], t.params["y"]) for t in done} == points
    evaluations = [tuple(line.split()[1:3]) for line in log.read_text().splitlines()]
    assert len(evaluations) == len(points) == len(set(evaluations))
    assert len({t.user_attrs["worker"] for t in done}) == 3  # the work was shared


# -- the database restarts mid-run ----------------------------------------------------------


def test_study_survives_a_database_restart(postgres, tmp_path):
    storage = postgres.create_database()
    proc = gentune(
        "tune",
        "--objective-fn",
        OBJECTIVE,
        "--study",
        "s",
        "--storage",
        storage,
        "--strategy",
        "random",
        "--workers",
        "2",
        "--trials",
        "8",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
    )
    wait_until(lambda: len(by_state(load(storage), TrialState.COMPLETE)) >= 2, 90, "2 trials")
    postgres.stop("fast")  # ends every connection, as a server restart does
    time.sleep(3)  # longer than a trial: every worker needs the database meanwhile
    postgres.start()
    output = finish(proc)
    assert "lost the study's database" in output and "database is back" in output
    study = load(storage)
    assert_complete_once(study, 8)
    for state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
        assert not by_state(study, state), state  # no trial was lost in the outage


# -- the GAN family, two workers on one machine ------------------------------------------------


def test_gan_study_with_two_workers(tmp_path):
    """`gentune tune --workers 2` on the digits GAN with a tiny budget: 4 distinct trials,
    both workers used, the floor stored (by the parent, before the workers start)."""
    proc = gentune(
        "tune",
        "--dataset",
        "digits",
        "--steps",
        "50",
        "--n-eval",
        "200",
        "--trials",
        "4",
        "--workers",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
    )
    finish(proc, timeout=240)
    name = "gan-mlp-digits-tpe-fid-steps50-n200"  # the default name holds a non-default budget
    study = load(f"sqlite:///{tmp_path}/{name}/study.db", name)
    done = assert_complete_once(study, 4, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len({t.user_attrs["worker"] for t in done}) == 2
    assert all("fid" in t.user_attrs["metrics"] for t in done if t.state == TrialState.COMPLETE)
    assert "floor" in study.user_attrs


def test_outage_longer_than_the_heartbeat_grace_loses_nothing(postgres, tmp_path):
    """The database is away longer than the heartbeat grace: the running trials look lost, so
    they are failed and re-queued when it is back; their workers notice and go on."""
    storage = postgres.create_database()
    proc = gentune(
        "tune",
        "--objective-fn",
        OBJECTIVE,
        "--study",
        "s",
        "--storage",
        storage,
        "--strategy",
        "random",
        "--workers",
        "2",
        "--trials",
        "6",
        "--runs-dir",
        str(tmp_path),
        "--no-report",
        env=FAST_HEARTBEAT,
    )
    wait_until(lambda: len(by_state(load(storage), TrialState.COMPLETE)) >= 2, 90, "2 trials")
    postgres.stop("fast")
    time.sleep(6)  # twice the grace period
    postgres.start()
    finish(proc)
    study = load(storage)
    done = assert_complete_once(study, 6)
    assert not by_state(study, TrialState.RUNNING) and not by_state(study, TrialState.WAITING)
    completed = {tuple(sorted(t.params.items())) for t in done}
    for t in by_state(study, TrialState.FAIL):  # each failed trial that began was run again
        assert not t.params or tuple(sorted(t.params.items())) in completed
