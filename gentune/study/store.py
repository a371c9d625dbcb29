"""Create, resume and run a study: storage, settings, interruption and recovery.

A study's settings (model, dataset, space, objective, budget, ...) are stored in the study
itself, so re-running the same command resumes it and a worker on another machine needs no
other file. A trial interrupted by Ctrl-C, a crash or a killed process is marked failed and
its parameters are queued again, so the study still reaches its requested number of trials.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune import __version__
from gentune.errors import GentuneError, StudyError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# nll: a likelihood family's validation NLL (gentune.families), the only metric for text.
OBJECTIVES = {"fid": "minimize", "kid": "minimize", "loss": "minimize", "nll": "minimize"}
# Training budget per trial (generator steps) when the user gives none; measured on 2 CPU
# cores so that the default jobs fit their time (see README).
DEFAULT_STEPS = {"digits": 3000, "mnist": 8000}
FALLBACK_STEPS = 3000


@dataclass(frozen=True)
class StudySettings:
    """What defines a study; stored in it and checked when it is resumed."""

    model: str = "gan-mlp"
    dataset: str = "digits"
    strategy: str = "tpe"
    objective: str = "fid"
    steps: int | None = None  # generator steps per trial; None with epochs None: DEFAULT_STEPS
    epochs: float | None = None  # or a budget in epochs
    trial_seconds: float | None = None  # and at most this much training time per trial
    n_eval: int | None = None  # N of the sample metric; None: the evaluator's default
    seed: int = 0
    space: dict = field(default_factory=dict)  # SearchSpace.to_dict()
    # How a trial's compute is spent (gentune.trial.monitor, gentune.search.pruners, gentune.trial.detectors).
    # These defaults are "off", which is how studies created before these fields ran;
    # gentune.api.tune picks the strategy's pruner and turns evaluations and detectors on.
    pruner: str = "none"  # none, median, percentile, halving or hyperband
    patience: int | None = None  # wrap the pruner: prune only after this many flat reports
    evals: int = 0  # evaluations during training, evenly spaced, before the final one
    eval_every: int | None = None  # or every this many G steps
    eval_samples: int | None = None  # N of those evaluations; None: min(N of the metric, 1000)
    detectors: dict | None = None  # DetectorConfig.to_dict(); None: no detector
    # Prune a trial whose validation loss rises while its training loss falls (gentune.train.loop).
    prune_overfitting: bool = False

    @property
    def direction(self) -> str:
        return OBJECTIVES.get(self.objective, "minimize")

    def to_dict(self) -> dict[str, Any]:
        return {"version": __version__, **asdict(self), "direction": self.direction}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def budget(self) -> dict[str, Any]:
        if self.epochs is not None:
            return {"epochs": self.epochs}
        return {"steps": self.steps or DEFAULT_STEPS.get(self.dataset, FALLBACK_STEPS)}


def default_study_name(settings: StudySettings) -> str:
    dataset = settings.dataset.replace("/", "_").replace(":", "-")
    return f"{settings.model}-{dataset}-{settings.strategy}-{settings.objective}"


def default_storage(study_name: str, runs_dir: Path) -> str:
    path = runs_dir / study_name / "study.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def host_name() -> str:
    """This machine's name in trial records; GENTUNE_HOST overrides it where hostnames repeat
    (containers sharing one name), since a trial of this host with a dead pid is recovered."""
    return os.environ.get("GENTUNE_HOST") or socket.gethostname()


def worker_id() -> str:
    return f"{host_name()}:{os.getpid()}"


REQUEUE_USER_ATTRS = ("fixed_config", "fixed_family", "train_seed", "confirm_of")


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (same grid point, same values)."""
    system_attrs = {
        k: v for k, v in trial.system_attrs.items() if k in ("grid_id", "search_space", "fixed_params")
    }
    if trial.params and "fixed_params" not in system_attrs:
        system_attrs["fixed_params"] = trial.params
    # What a queued trial was given to run (a --confirm re-run's config and seed) goes along.
    kept = {k: trial.user_attrs[k] for k in REQUEUE_USER_ATTRS if k in trial.user_attrs}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={**kept, "retry_of": trial.number},
            system_attrs=system_attrs,
        )
    )


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` (SQLite, PostgreSQL, journal file), with heartbeats.

    A trial whose process stops sending heartbeats (killed, machine lost) is marked failed
    by the next worker and its parameters are queued again; see gentune/study/storage.py.
    """
    from gentune.study.storage import make_storage as open_storage

    return open_storage(url, on_stale=requeue)


def enqueue_grid(study: optuna.Study, grid: dict[str, list]) -> int:
    """Queue every grid point once, as a waiting trial, when a grid study is created.

    Workers pop waiting trials atomically, so each point is handed out exactly once however
    many workers run; the points carry GridSampler's grid_id, so `requeue` keeps them.
    """
    if study.user_attrs.get("grid_queue") is not None or study.get_trials(deepcopy=False):
        return 0
    names = sorted(grid)  # GridSampler's order: grid_id i is the i-th point of this product
    space = {name: list(grid[name]) for name in names}
    points = list(itertools.product(*space.values()))
    for grid_id, values in enumerate(points):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                system_attrs={
                    "fixed_params": dict(zip(names, values)),
                    "grid_id": grid_id,
                    "search_space": space,
                },
            )
        )
    study.set_user_attr("grid_queue", len(points))
    return len(points)


def open_study(
    settings: StudySettings | None,
    *,
    storage: str,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    command: str | None = None,
) -> optuna.Study:
    """Create the study, or load it and check that `settings` match the stored ones.

    With settings None the study must exist; its stored settings are used (a worker's case).
    """
    store = make_storage(storage)
    exists = study_name in {s.study_name for s in optuna.get_all_study_summaries(store)}
    if settings is None and not exists:
        raise StudyError(
            f"no study named {study_name!r} in {storage}",
            value=study_name,
            fix="check --study and --storage, or create the study with gentune tune",
        )
    direction = settings.direction if settings else None
    study = optuna.create_study(
        storage=store,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        direction=direction,
        load_if_exists=True,
    )
    stored = study.user_attrs.get("gentune")
    if settings is not None and stored is None:
        study.set_user_attr("gentune", settings.to_dict())
        if command:
            study.set_user_attr("command", command)
    elif settings is not None:
        check_same_settings(study_name, StudySettings.from_dict(stored), settings)
    return study


def check_same_settings(study_name: str, stored: StudySettings, asked: StudySettings) -> None:
    for f in fields(StudySettings):
        a, b = getattr(stored, f.name), getattr(asked, f.name)
        if a != b:
            raise StudyError(
                f"study {study_name!r} exists with {f.name}={a!r}, but this command asks for "
                f"{f.name}={b!r}; a study keeps one setting so its trials stay comparable",
                fix=f"rerun with the original {f.name}, or start a new study with --study NAME",
            )


def stored_settings(study: optuna.Study) -> StudySettings:
    stored = study.user_attrs.get("gentune")
    if stored is None:
        raise StudyError(
            f"study {study.study_name!r} was not created by gentune tune",
            fix="use a study created with gentune tune",
        )
    return StudySettings.from_dict(stored)


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail and requeue RUNNING trials whose process on this host is gone (crash, SIGKILL).

    Trials of other hosts are left to the heartbeat mechanism.
    """
    host = host_name()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = t.user_attrs.get("worker", "")
        name, _, pid = who.rpartition(":")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "error", "its process ended mid-trial")
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


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


@contextmanager
def sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C, so a stopped worker releases its trial the same way."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; the running trial was re-queued."""

    def __init__(self, trial_number: int | None):
        self.trial_number = trial_number
        super().__init__(trial_number)


def run(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int | None,
    timeout: float | None,
    progress=None,
    max_failures: int = 5,
) -> None:
    """Run `objective` until the study holds `n_trials` finished trials or `timeout` passes.

    Failed trials (an exception in training) do not count; after `max_failures` failures in a
    row the run stops. Ctrl-C marks the running trial, queues its parameters again and raises
    Interrupted, so that rerunning the same command continues where this one stopped.

    Many workers may run this on one study at once: a worker starts a trial only while the
    finished, running and queued trials fall short of `n_trials`, otherwise it waits, picking
    up the trials of workers that die (re-queued), and leaves once the study is complete.
    """
    from gentune.study.workers import Surplus, is_surplus

    recovered = recover_orphans(study)
    if recovered and progress is not None:
        progress.console.print(f"re-queued trials {recovered}: their process ended mid-trial")
    state = {"current": None, "failures": 0, "fatal": None}
    grid_queue = study.user_attrs.get("grid_queue") is not None

    def tracked(trial: optuna.Trial) -> float:
        state["current"] = trial.number
        if is_surplus(study, trial, n_trials, grid_queue):
            trial.set_user_attr("surplus", True)
            raise Surplus("another worker's trial already covers this one; not run")
        trial.set_user_attr("worker", worker_id())
        try:
            return objective(trial)
        except optuna.TrialPruned:  # stopped early on purpose (pruner, detector): no error
            raise
        except GentuneError as e:  # a user mistake: stop the study rather than fail every trial
            state["fatal"] = e
            trial.set_user_attr("error", str(e))
            raise
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        state["current"] = None
        if trial.user_attrs.get("surplus"):
            return
        state["failures"] = state["failures"] + 1 if trial.state == TrialState.FAIL else 0
        if progress is not None:
            _report_progress(progress, study, trial)

    with sigterm_as_interrupt():
        try:
            _trial_loop(
                study,
                n_trials,
                timeout,
                grid_queue,
                state,
                max_failures,
                lambda: _one_trial(study, tracked, after, state, progress),
            )
        except KeyboardInterrupt:
            number = state["current"]
            if number is not None:
                requeue(study, study.get_trials(deepcopy=False)[number])
            raise Interrupted(number) from None
    _raise_if_stopped(study, state, max_failures)


def _trial_loop(study, n_trials, timeout, grid_queue, state, max_failures, one_trial) -> None:
    """Start trials while the study needs them; wait while other workers' trials may fail."""
    from gentune.study.workers import POLL_SECONDS, next_move, recover_stale

    deadline = None if timeout is None else time.monotonic() + timeout
    while state["fatal"] is None and state["failures"] < max_failures:
        if deadline is not None and time.monotonic() >= deadline:
            return
        recover_orphans(study)  # a worker of this host that died: its trial, at once
        move = next_move(study, n_trials, grid_queue)
        if move == "done":
            return
        if move == "wait":
            time.sleep(POLL_SECONDS)
            recover_stale(study)
        else:
            one_trial()


def _one_trial(study, tracked, after, state, progress) -> None:
    try:
        study.optimize(tracked, n_trials=1, callbacks=[after], catch=(Exception,), gc_after_trial=False)
    except Exception:
        # Telling a trial that another worker already failed (its heartbeat lapsed while the
        # database was away) raises; the trial was re-queued there, so this worker goes on.
        number = state["current"]
        if number is None or study.get_trials(deepcopy=False)[number].state != TrialState.FAIL:
            raise
        state["current"] = None
        if progress is not None:
            progress.console.print(
                f"trial {number} was taken over by another worker (its heartbeat lapsed); going on"
            )


def _raise_if_stopped(study: optuna.Study, state: dict, max_failures: int) -> None:
    if state["fatal"] is not None:
        raise state["fatal"]
    if state["failures"] >= max_failures:
        last = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1]
        raise StudyError(
            f"{max_failures} trials in a row failed; the last error was: {last.user_attrs.get('error')}",
            fix="fix the cause above and rerun the same command to continue",
        )


def _report_progress(progress, study: optuna.Study, trial: FrozenTrial) -> None:
    best, best_number = None, None
    try:
        best_trial = study.best_trial
        best, best_number = best_trial.value, best_trial.number
    except ValueError:  # no completed trial yet
        pass
    note = ""
    if trial.state == TrialState.PRUNED:
        note = f" ({trial.user_attrs.get('prune_reason', 'pruned')})"
    elif trial.state == TrialState.FAIL:
        note = f" ({trial.user_attrs.get('error', 'failed')})"
    progress.trial_finished(trial.number, trial.state.name.lower(), trial.value, best, best_number, note)
