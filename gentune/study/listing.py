"""Reading studies without training anything: open one that exists, and list a runs folder's.

`gentune best` and `gentune list` answer in well under a second because nothing here imports
torch: only Optuna, gentune's storage and the stored keys. (gentune.study.store, which creates
and resumes studies, needs gentune.settings and with it the model families; it checks that a
study exists with `check_exists` from here.) Opening a study here writes nothing, so a study
on a read-only mount reads.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from gentune.errors import GentuneError, StudyError
from gentune.study.storage import hide_password, journal_path, make_storage
from gentune.trial import attrs
from gentune.trial.attrs import StudyKey

STUDY_FILE = "study.db"  # runs/STUDY/study.db, the default storage of a study


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage keeps its data in, or None for a database server.

    >>> storage_file("sqlite:///file:runs/x/study.db?mode=ro&uri=true")  # SQLite's URI form
    PosixPath('runs/x/study.db')
    >>> storage_file("postgresql://u@host/db") is None
    True
    """
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path.startswith("file:"):
            return Path(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        return Path(path)
    return journal_path(url)


def runs_storage(name: str, runs_dir: Path, *, fix: str) -> str:
    """The default storage of study `name`, sqlite:///RUNS_DIR/NAME/study.db, when that file
    exists; else a GentuneError with `fix` (the options or arguments of the caller)."""
    path = Path(runs_dir) / name / STUDY_FILE
    if not path.exists():
        raise GentuneError(f"no study {name!r} under {runs_dir}/", value=str(path), fix=fix)
    return f"sqlite:///{path}"


def study_names(storage: str) -> list[str]:
    """The studies in `storage`; none for a SQLite or journal file that does not exist (opening
    the storage would create it)."""
    file = storage_file(storage)
    if file is not None and not file.exists():
        return []
    return optuna.get_all_study_names(make_storage(storage, on_stale=None))


def open_existing(name: str, storage: str) -> optuna.Study:
    """The existing study `name` in `storage`, loaded for reading; a StudyError naming the
    studies there when it does not exist."""
    check_exists(name, storage)
    # load_study writes nothing (create_study tries an INSERT even for a study that exists).
    return optuna.load_study(study_name=name, storage=make_storage(storage, on_stale=None))


def check_exists(name: str, storage: str) -> None:
    """A StudyError, naming the studies there, unless `storage` holds the study `name`; a
    storage file that does not exist is not created."""
    file = storage_file(storage)
    if file is not None and not file.exists():
        raise StudyError(
            f"the study storage {file} does not exist",
            value=hide_password(storage),
            fix="pass the storage the study was run with, e.g. sqlite:///runs/<study>/study.db",
        )
    names = study_names(storage)
    if name not in names:
        raise StudyError(
            f"no study named {name!r} in {hide_password(storage)}; studies there: "
            f"{', '.join(names) or 'none'}",
            value=name,
            fix="check the study name and --storage (gentune list shows the studies), or create "
            "it with gentune tune",
        )


@dataclass(frozen=True)
class StudyLine:
    """One study as `gentune list` shows it."""

    name: str
    where: str  # the folder under runs/ it lives in, or the storage URL (password hidden)
    model: str | None  # the family, "user" for a user's objective; None: not made by gentune
    dataset: str | None
    objective: str | None
    counts: dict[str, int]  # complete, pruned, failed, running, waiting
    target: int | None  # the finished trials the last tune asked for
    best: float | None  # the best value (None: no complete trial, or several objectives)
    state: str  # finished, running, interrupted or new

    @property
    def finished(self) -> int:
        return self.counts["complete"] + self.counts["pruned"]


def describe(study: optuna.Study, where: str) -> StudyLine:
    """The line of `study` (found in `where`)."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        "complete": 0,
        "pruned": 0,
        "failed": 0,
        "running": 0,
        "waiting": 0,
    }
    live = 0
    for t in trials:
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
            live += _may_be_alive(attrs.worker(t))
    settings = study.user_attrs.get(StudyKey.SETTINGS) or {}
    best = None
    if counts["complete"] and len(study.directions) == 1:
        best = study.best_value
    target = attrs.target_trials(study)
    return StudyLine(
        name=study.study_name,
        where=where,
        model=settings.get("model"),
        dataset=settings.get("dataset"),
        objective=settings.get("objective"),
        counts=counts,
        target=target,
        best=best,
        state=study_state(counts, target, live),
    )


def study_state(counts: dict[str, int], target: int | None, live: int) -> str:
    """finished (it holds its target), running (a trial's process is alive), new (no trial yet,
    e.g. made by gentune create) or interrupted (rerun the command, or start workers, to go on).

    >>> c = {"complete": 3, "pruned": 1, "failed": 0, "running": 1, "waiting": 0}
    >>> study_state(c, 4, 1), study_state(c, 10, 1), study_state(c, 10, 0)
    ('finished', 'running', 'interrupted')
    """
    finished = counts["complete"] + counts["pruned"]
    if target is not None and finished >= target:
        return "finished"
    if live:
        return "running"
    if not any(counts.values()):
        return "new"
    if target is None and not counts["waiting"]:
        return "finished"  # made before studies stored their target: nothing says it is short
    return "interrupted"


def _may_be_alive(worker: str | None) -> bool:
    """Whether the process `worker` (host:pid) may still run its trial: a process of this host
    is looked up; one of another host is taken as alive (its heartbeat is checked by the next
    worker that runs, which re-queues the trial if it lapsed)."""
    host, _, pid = (worker or "").rpartition(":")
    if host != (os.environ.get("GENTUNE_HOST") or socket.gethostname()) or not pid.isdigit():
        return bool(worker)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_studies(runs_dir: Path | None = None, storage: str | None = None) -> list[StudyLine]:
    """The studies in `storage` (a database URL), or else those under `runs_dir`: each folder
    holding a study.db (a folder moved aside by `--force-new` included), sorted by name."""
    lines = []
    if storage is not None:
        where = hide_password(storage)
        for name in study_names(storage):
            lines.append(describe(open_existing(name, storage), where))
        return sorted(lines, key=lambda line: line.name)
    folder = Path("runs") if runs_dir is None else Path(runs_dir)
    for db in sorted(folder.glob(f"*/{STUDY_FILE}")):
        url = f"sqlite:///{db}"
        for name in study_names(url):
            lines.append(describe(open_existing(name, url), str(db.parent)))
    return sorted(lines, key=lambda line: (line.name, line.where))
