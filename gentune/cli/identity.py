"""Which study a `gentune tune` runs, and what it already holds: the name (with the budget in a
default name), --more, --force-new, and the line that says a study has nothing left to run.

The default name (`gentune.settings.tune_study_name`, which `gentune.tune()` uses too) is
MODEL-DATASET-STRATEGY-OBJECTIVE for the default budget, as it always was, so the studies in
users' runs/ folders keep theirs; a budget set apart from the default one is added
(gan-mlp-digits-tpe-fid-steps500), so changing --steps starts a study of its own.
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from gentune.errors import GentuneError
from gentune.settings import RunOptions, check_count
from gentune.study.listing import STUDY_FILE, open_existing, study_names
from gentune.study.store import count_finished, default_storage

# The studies the phases derive from a study's name (gentune.phases): <study>-screen, -stageN,
# -narrow and -confirm, chained as in <study>-stage2-narrow-confirm.
PHASE_SUFFIX = re.compile(r"(-(screen|stage\d+|narrow|confirm))+")


@dataclass(frozen=True)
class Identity:
    """The study a run works on, and how many finished trials it held before (None: new)."""

    name: str
    storage: str
    finished: int | None


def identify(name: str, run: RunOptions) -> Identity:
    """The study `name` of this run, where it is stored, and its finished trials now."""
    storage = run.storage or default_storage(name, Path(run.runs_dir))
    finished = count_finished(open_existing(name, storage)) if name in study_names(storage) else None
    return Identity(name, storage, finished)


def check_more(more: int | None, trials: int | None, phased: bool) -> None:
    """--more K adds K trials to one study: not with --trials (a total), nor with phases."""
    check_count("--more", more, example=10)
    if more is None:
        return
    if trials is not None:
        raise GentuneError(
            "--more adds trials to those the study holds, --trials sets their total: give one of them",
            value={"--more": more, "--trials": trials},
            fix="drop --trials, or drop --more and pass --trials with the total",
        )
    if phased:
        raise GentuneError(
            "--more adds trials to one study, and the phases (--stages, --narrow, --confirm) run "
            "studies of their own",
            value=more,
            fix="drop --more, and give the totals with --trials (and --narrow-trials)",
        )


def more_trials(study: Identity, more: int) -> int:
    """The --trials of a run with --more: the finished trials the study holds, plus `more`."""
    return (study.finished or 0) + more


def nothing_to_run(study: Identity, target: int | None, command: str) -> str | None:
    """The line that says a rerun found the study complete, and how to go on; None when this
    run had something to do."""
    if study.finished is None or target is None or study.finished < target:
        return None
    base = _without(command, ("--trials", "--more"), flags=("--force-new",))
    return (
        f"study {study.name} already holds {study.finished} of {target} finished trials: nothing to "
        f"run. To run more: {base} --more 10 (10 more trials; or --trials N, a total)"
    )


def _without(command: str, options: tuple[str, ...], flags: tuple[str, ...] = ()) -> str:
    """`command` without the given options and their values, and without the given flags.

    >>> command = "gentune tune --trials 5 --force-new --study s --more=2"
    >>> _without(command, ("--trials", "--more"), ("--force-new",))
    'gentune tune --study s'
    """
    kept, skip = [], False
    for word in shlex.split(command):
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in options:
            skip = "=" not in word
        elif word not in flags:
            kept.append(word)
    return shlex.join(kept)


def move_aside(study: Identity, run: RunOptions) -> list[tuple[Path, Path]]:
    """--force-new: move the study's folder, and those of the studies its phases derived from it
    (NAME-narrow, ...), aside to NAME.old-TIME, so that this run starts it afresh; nothing is
    deleted. Returns the folders moved, (from, to)."""
    if run.storage is not None:
        if study.finished is None:
            return []
        raise GentuneError(
            "--force-new moves a study's folder under --runs-dir aside, and this study is in the "
            "database --storage names, which gentune does not change",
            value=study.name,
            fix="start a new study with --study NEW_NAME instead",
        )
    runs = Path(run.runs_dir)
    folders = [runs / study.name] if (runs / study.name).exists() else []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for folder in folders + _phase_folders(runs, study.name):
        target = folder.with_name(f"{folder.name}.old-{stamp}")
        folder.rename(target)
        moved.append((folder, target))
    return moved


def _phase_folders(runs: Path, name: str) -> list[Path]:
    if not runs.is_dir():
        return []
    return sorted(
        p
        for p in runs.iterdir()
        if p.name.startswith(name)
        and PHASE_SUFFIX.fullmatch(p.name[len(name) :])
        and (p / STUDY_FILE).exists()
    )
