"""Issue 14, item 7: a read-only or full database fails at once with a fix (it was retried for
10 minutes as a lost connection), reading a study writes nothing to it, and a report that does
not fit on the disk is not left half-written."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from gentune.api import RunOptions, SearchOptions, run_objective
from gentune.errors import StudyError
from gentune.settings import UserSettings
from gentune.study.storage import is_connection_error, storage_failure
from gentune.study.store import (
    open_or_create,
)
from gentune.trial.attrs import TrialKey

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ROOT / "tests" / "objectives"


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


def _sqlite_error(sql: str, url_args: str = "", setup: str = "") -> sqlite3.Error:
    con = sqlite3.connect(f"file::memory:{url_args}", uri=True)
    if setup:
        con.executescript(setup)
    with pytest.raises(sqlite3.Error) as caught:
        con.executescript(sql)
    return caught.value


def test_storage_failures_are_told_apart_from_lost_connections(tmp_path):
    read_only = _sqlite_error("CREATE TABLE t (x)", "?mode=ro")
    full = _sqlite_error(
        "INSERT INTO t SELECT randomblob(4000) FROM t;" * 50,
        setup="PRAGMA max_page_count = 20; CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(4000));",
    )
    db = tmp_path / "locked.db"
    holder = sqlite3.connect(db)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(db, timeout=0).execute("SELECT * FROM t")
    holder.rollback()

    # As SQLAlchemy and then Optuna wrap them.
    def wrapped(e: BaseException) -> BaseException:
        sa = sqlalchemy.exc.OperationalError("INSERT ...", {}, e)
        sa.__cause__ = e
        outer = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
        outer.__cause__ = sa
        return outer

    for error, what in [(read_only, "read-only"), (full, "is full")]:
        failure = storage_failure(wrapped(error), "postgresql://u:secret@h/db")
        assert failure is not None and what in failure.rule, failure
        assert "secret" not in str(failure) and failure.fix
    assert storage_failure(wrapped(locked.value)) is None  # busy: retried, as a lost connection
    assert is_connection_error(wrapped(locked.value))


def test_a_full_database_fails_at_once(tmp_path, monkeypatch):
    """SQLite's own "database or disk is full" (its page cap stands in for a full disk), through
    gentune's storage: a StudyError with a fix in seconds, not ten minutes of retries."""
    monkeypatch.delenv("GENTUNE_DB_RETRY_SECONDS", raising=False)
    url = f"sqlite:///{tmp_path}/full.db"
    settings = UserSettings(strategy="random", direction="minimize", seed=0, space={}, objective_fn=None)
    study = open_or_create("full", url, settings=settings)
    engine = study._storage._backend.engine

    @sqlalchemy.event.listens_for(engine, "connect")
    def cap_pages(dbapi_connection, record):
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()
    start = time.monotonic()
    with pytest.raises(StudyError, match="disk .*is full.*database or disk is full.*Fix: free space"):
        study.set_user_attr("blob", "x" * 100_000)
    assert time.monotonic() - start < 30


def test_opening_a_study_to_read_it_writes_nothing(tmp_path):
    run(tmp_path, "random", 2, study="q")
    db = tmp_path / "q" / "study.db"
    before = db.read_bytes()
    read_only = f"sqlite:///file:{db}?mode=ro&uri=true"
    study = open_or_create("q", read_only)
    assert len(study.trials) == 2
    with pytest.raises(StudyError, match="read-only.*Fix: gentune best, report and sample read"):
        open_or_create("q", read_only, settings=UserSettings(strategy="random", seed=0, space={}))
    assert db.read_bytes() == before


def _namespace_ok() -> bool:
    """Whether this process may mount in a mount namespace of its own (root, or a user
    namespace), where a read-only bind or a tiny tmpfs is real and vanishes with the process."""
    try:
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


needs_mounts = pytest.mark.skipif(not _namespace_ok(), reason="needs mount namespaces (unshare -m)")


def _in_namespace(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )


# best, report and sample in one process: they are in-process CLI calls (CliRunner) to save
# the start-ups, each printing "rc NAME EXIT_CODE".
READERS = """
from typer.testing import CliRunner
from gentune.cli import app
for name, args in [
    ("best", ["best", "--study", "q", "--runs-dir", "{mnt}", "-o", "{out}/best.json"]),
    ("report", ["report", "q", "--runs-dir", "{mnt}", "-o", "{out}/report.html"]),
    ("sample", ["sample", "--study", "legacy-gan", "--runs-dir", "{mnt}", "--n", "5", "-o", "{out}/s.npy"]),
]:
    r = CliRunner().invoke(app, args)
    print(r.output, r.exception)
    print("rc", name, r.exit_code)
"""


@pytest.mark.slow
@needs_mounts
def test_a_study_on_a_read_only_mount(tmp_path):
    """best, report and sample read a study on a read-only mount (best took 604 s to fail,
    then); tune on it fails at once with a fix, and nothing there changes."""
    src, mnt, out = tmp_path / "src", tmp_path / "mnt", tmp_path / "out"
    for d in (mnt, out):
        d.mkdir()
    run(src, "random", 2, study="q")
    legacy = ROOT / "tests" / "legacy" / "v0.1.0" / "legacy-gan"
    subprocess.run(["cp", "-r", str(legacy), str(src / "legacy-gan")], check=True)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    readers = READERS.format(mnt=mnt, out=out)
    fn = f"{OBJECTIVES / 'slow_quadratic.py'}:objective"
    script = f"""
        mount --bind -o ro {src} {mnt} || exit 99
        cd {out}
        {sys.executable} -c '{readers}'
        start=$(date +%s)
        {sys.executable} -m gentune tune --objective-fn {fn} --strategy random --study q --trials 4 \
            --storage sqlite:///{mnt}/q/study.db --runs-dir {out} --no-report
        echo "rc tune $? $(( $(date +%s) - start ))"
    """
    r = _in_namespace(script, {"SLOW_SECONDS": "0"})
    codes = {line.split()[1]: line.split()[2:] for line in r.stdout.splitlines() if line.startswith("rc ")}
    assert [codes[c] for c in ("best", "report", "sample")] == [["0"]] * 3, r.stdout + r.stderr
    assert codes["tune"][0] == "2" and int(codes["tune"][1]) < 60, r.stdout + r.stderr
    assert "read-only" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert json.loads((out / "best.json").read_text())["study"] == "q"
    assert (out / "report.html").stat().st_size > 10_000 and (out / "s.npy").exists()
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_fails_at_once_and_leaves_no_truncated_report(tmp_path):
    """A study on a tmpfs that fills up: the run stops at once with a fix (it was retried for
    10 minutes); a report that does not fit is not left half-written."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    gentune = f"{sys.executable} -m gentune"
    fn = f"{OBJECTIVES / 'bulky.py'}:objective"
    script = f"""
        mount -t tmpfs -o size=600k tmpfs {mnt} || exit 99
        mkdir {mnt}/q && echo old > {mnt}/q/report.html
        start=$(date +%s)
        {gentune} tune --objective-fn {fn} --strategy random --study q --runs-dir {mnt} --trials 1000 \
            --no-report
        echo "rc tune $? $(( $(date +%s) - start ))"
        {gentune} report q --runs-dir {mnt}; echo "rc report $?"
        cat {mnt}/q/report.html; ls -a {mnt}/q
        cp {mnt}/q/study.db {out}/
    """
    r = _in_namespace(script, {})
    codes = {line.split()[1]: line.split()[2:] for line in r.stdout.splitlines() if line.startswith("rc ")}
    assert codes["tune"][0] == "2" and int(codes["tune"][1]) < 60, r.stdout + r.stderr
    assert "is full" in r.stderr and "Fix: free space" in r.stderr, r.stderr
    assert codes["report"] == ["2"] and "could not write the report" in r.stderr, r.stdout + r.stderr
    assert "\nold\n" in r.stdout and ".tmp" not in r.stdout  # the old page, whole; no leftovers
    study = optuna.load_study(study_name="q", storage=f"sqlite:///{out}/study.db")
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 1  # what finished is kept
