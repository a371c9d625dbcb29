"""Open a study, and keep it whole: storage, stored settings, re-queued and orphaned trials.

A study's settings are stored in the study itself (gentune.settings), so re-running the same
command resumes it and a worker on another machine needs no other file. A trial interrupted
by Ctrl-C, a crash or a killed process is marked failed and its parameters are queued again,
so the study still reaches its requested number of trials; parameters whose process died
MAX_RETRIES + 1 times are not queued again. `open_or_create` is the one way gentune opens a study.
"""

from __future__ import annotations

import math
import os
import socket
import zlib
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError, StudyError
from gentune.paths import writable_folder
from gentune.settings import StudySettings, UserSettings, check_same_settings, is_user_study
from gentune.study.listing import check_exists, storage_file, study_names
from gentune.study.storage import make_storage as open_storage
from gentune.trial.attrs import REQUEUE_KEYS, OptunaKey, StudyKey, TrialKey

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Settings = StudySettings | UserSettings
# Times the parameters of a trial whose process died are queued again. A configuration that
# kills every worker that takes it (out of memory, a crash in native code) would otherwise
# loop forever. Ctrl-C and SIGTERM do not count: an interrupted trial is not a crashing one.
MAX_RETRIES = 3


def default_storage(study_name: str, runs_dir: Path) -> str:
    """sqlite:///RUNS/STUDY/study.db; the folder is made when the study is created."""
    return f"sqlite:///{runs_dir / study_name / 'study.db'}"


def host_name() -> str:
    """This machine's name in trial records; GENTUNE_HOST overrides it where hostnames repeat
    (containers sharing one name), since a trial of this host with a dead pid is recovered."""
    return os.environ.get("GENTUNE_HOST") or socket.gethostname()


def worker_id() -> str:
    return f"{host_name()}:{os.getpid()}"


def requeue(study: optuna.Study, trial: FrozenTrial, *, crashed: bool = True) -> bool:
    """Queue a failed trial's parameters again (same grid point, same values); False when not.

    `crashed`: its process died (killed, out of memory, a lost machine), which counts towards
    MAX_RETRIES; after that many retries the parameters are not queued again (the caller
    stored why, `lost_trial_error`). An interrupted trial (Ctrl-C, SIGTERM) counts nothing.
    """
    retries = retries_of(trial)
    if crashed:
        if retries >= MAX_RETRIES:
            return False
        retries += 1
    system_attrs = {
        k: v
        for k, v in trial.system_attrs.items()
        if k in (OptunaKey.GRID_ID, OptunaKey.SEARCH_SPACE, OptunaKey.FIXED_PARAMS)
    }
    if trial.params and OptunaKey.FIXED_PARAMS not in system_attrs:
        system_attrs[OptunaKey.FIXED_PARAMS] = trial.params
    # What a queued trial was given to run (a --confirm re-run's config and seed) goes along.
    kept = {k: trial.user_attrs[k] for k in REQUEUE_KEYS if k in trial.user_attrs}
    if retries:
        kept[TrialKey.RETRIES] = retries
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**kept, TrialKey.RETRY_OF: trial.number},
            system_attrs=system_attrs,
        )
    )
    return True


def retries_of(trial: FrozenTrial) -> int:
    """How many times a trial's parameters were queued again after their process died."""
    return int(trial.user_attrs.get(TrialKey.RETRIES, 0))


def lost_trial_error(trial: FrozenTrial, how: str) -> str:
    """The `error` of a trial whose process died (`how`), saying when it is not queued again."""
    if retries_of(trial) < MAX_RETRIES:
        return how
    return (
        f"{how}; these parameters ended their process on {MAX_RETRIES + 1} runs in a row "
        f"({MAX_RETRIES} retries, gentune's most), so they are not queued again: check whether "
        "they need more memory or time than a worker has"
    )


def _heartbeat_error(trial: FrozenTrial) -> str:
    return lost_trial_error(trial, "its worker stopped sending heartbeats (killed, or its machine lost)")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (SQLite, PostgreSQL, journal file), with heartbeats.

    A trial whose process stops sending heartbeats (killed, machine lost) is marked failed
    by the next worker and its parameters are queued again; see gentune/study/storage.py.
    """
    return open_storage(url, on_stale=_requeue_lost, describe_stale=_heartbeat_error)


def _requeue_lost(study: optuna.Study, trial: FrozenTrial) -> None:
    requeue(study, trial)


def enqueue_grid(study: optuna.Study, grid: dict[str, list], trials: int | None = None) -> int:
    """Queue the grid points the study still needs, each once, as waiting trials.

    `trials` is the study's target (None: every point). Points are queued in GridSampler's
    order (grid_id i is the i-th point of the product of the sorted names), from the first not
    yet queued, until the study's finished, running and queued trials reach the target: a
    rerun with a larger --trials adds the next points, and one after a failed point adds one
    in its place. Workers pop waiting trials atomically, so each point is handed out exactly
    once however many workers run; the points carry GridSampler's grid_id, so `requeue` keeps
    them. Queueing costs a database transaction per point (about 40 ms on a local disk), so a
    run stopped while queueing continues after the last point queued. Returns the number of
    points queued now.
    """
    queued = study.user_attrs.get(StudyKey.GRID_QUEUE)
    trials_now = study.get_trials(deepcopy=False)
    if queued is None and trials_now:
        return 0  # trials that were not queued as grid points: not a grid study
    if queued is None:
        study.set_user_attr(StudyKey.GRID_QUEUE, 0)  # a grid study from now on, even if stopped
    names = sorted(grid)
    space = {name: list(grid[name]) for name in names}
    size = math.prod(len(values) for values in space.values())
    target = size if trials is None else min(trials, size)
    held = sum(t.state != TrialState.FAIL for t in trials_now)
    start = max(
        [queued or 0]
        + [t.system_attrs[OptunaKey.GRID_ID] + 1 for t in trials_now if OptunaKey.GRID_ID in t.system_attrs]
    )
    stop = min(size, start + max(0, target - held))
    for grid_id in range(start, stop):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={
                    OptunaKey.FIXED_PARAMS: grid_point(space, grid_id),
                    OptunaKey.GRID_ID: grid_id,
                    OptunaKey.SEARCH_SPACE: space,
                },
            )
        )
    if stop > start:
        study.set_user_attr(StudyKey.GRID_QUEUE, stop)
    return stop - start


def grid_point(space: dict[str, list], grid_id: int) -> dict:
    """Point `grid_id` of the product of `space`'s values, in itertools.product's order (the last
    name varies fastest), found without listing the points before it.

    >>> grid_point({"a": [1, 2], "b": ["x", "y", "z"]}, 4)
    {'a': 2, 'b': 'y'}
    """
    point = {}
    for name in reversed(space):
        grid_id, index = divmod(grid_id, len(space[name]))
        point[name] = space[name][index]
    return {name: point[name] for name in space}


def study_exists(storage: str, name: str) -> bool:
    return name in study_names(storage)


def existing_settings(storage: str, name: str) -> dict | None:
    """The settings dict stored in study `name`, or None when there is no such study yet."""
    if not study_exists(storage, name):
        return None
    return optuna.load_study(study_name=name, storage=make_storage(storage)).user_attrs.get(StudyKey.SETTINGS)


def open_or_create(
    name: str,
    storage: str,
    *,
    settings: Settings | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    command: str | None = None,
) -> optuna.Study:
    """The study `name` in `storage`, with `sampler` and `pruner` attached.

    With `settings` (a built-in family's StudySettings or a user objective's UserSettings) the
    study is created when it does not exist, its settings stored with it; when it does, the
    stored settings must equal `settings`. With settings None the study must exist (a worker,
    a report, `gentune best`).
    """
    if settings is None:
        check_exists(name, storage)
        # Loading writes nothing (create_study tries an INSERT even for a study that exists),
        # so best, report and sample read a study on a read-only mount.
        return optuna.load_study(
            study_name=name, storage=make_storage(storage), sampler=sampler, pruner=pruner
        )
    file = storage_file(storage)
    if file is not None:
        writable_folder(
            file.parent, "the study's folder", fix="pass --runs-dir or --storage with a folder you can write"
        )
    study = optuna.create_study(
        storage=make_storage(storage),
        study_name=name,
        sampler=sampler,
        pruner=pruner,
        directions=[optuna.study.StudyDirection[d.upper()] for d in settings.directions],
        load_if_exists=True,
    )
    stored = study.user_attrs.get(StudyKey.SETTINGS)
    if stored is None:
        study.set_user_attr(StudyKey.SETTINGS, settings.to_dict())
        if command:
            study.set_user_attr(StudyKey.COMMAND, command)
    else:
        check_same_settings(name, type(settings).from_dict(stored), settings)
    return study


def stored_settings(study: optuna.Study) -> Settings:
    """The settings a study was created with: StudySettings, or UserSettings for a user's objective."""
    stored = study.user_attrs.get(StudyKey.SETTINGS)
    if stored is None:
        raise StudyError(
            f"study {study.study_name!r} was not created by gentune tune",
            fix="use a study created with gentune tune",
        )
    return UserSettings.from_dict(stored) if is_user_study(stored) else StudySettings.from_dict(stored)


def builtin_settings(study: optuna.Study) -> StudySettings:
    """The StudySettings of a study of a built-in family; a clear error for a user's objective."""
    settings = stored_settings(study)
    if not isinstance(settings, StudySettings):
        raise GentuneError(
            f"study {study.study_name!r} runs your own objective, which gentune cannot retrain",
            value=study.study_name,
            fix="use a study of a built-in family (gentune tune --model ...)",
        )
    return settings


def auto_worker_index() -> int:
    """A worker index for a worker started without one: from its host and pid, so that two
    such workers almost surely draw from different seeds (1000 and up, clear of 0..N-1)."""
    return 1000 + zlib.crc32(worker_id().encode()) % 1_000_000


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail and requeue RUNNING trials whose process on this host is gone (crash, SIGKILL);
    returns their numbers (those given up after MAX_RETRIES included).

    Trials of other hosts are left to the heartbeat mechanism.
    """
    host = host_name()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get(TrialKey.WORKER, "")
        name, _, pid = who.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            error = lost_trial_error(t, "its process ended mid-trial")
            study._storage.set_trial_user_attr(t._trial_id, TrialKey.ERROR, error)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker of this host recovered it first
        requeue(study, t)
        recovered.append(t.number)
    return recovered


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counts(trial: FrozenTrial) -> bool:
    """Whether `trial` is one of the study's --trials: a configuration of its own, not a
    promotion continuing another one rung up (gentune.phases.promotion)."""
    return trial.user_attrs.get(TrialKey.PROMOTED_FROM) is None


def count_finished(study: optuna.Study) -> int:
    """The finished trials that count towards --trials (`counts`)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False, states=FINISHED))
