"""Run a study's trials until it holds its target: one runner for every kind of objective.

Many workers may run a `Runner` on one study at once. A worker starts a trial only while the
study's finished, running and queued trials fall short of its target, else it waits and takes
over the re-queued trials of workers that died; a grid study hands out only its queued points.
Ctrl-C (or SIGTERM) stops the running trial at once, marks it, queues its parameters again
and raises `Interrupted`, so rerunning the same command continues where this one stopped; one
that lands between trials stops the run before the next (`SafeInterrupts`).

What an objective hands back is checked before Optuna sees it (`value_problem`): a trial whose
value is not one finite number (a multi-objective study: one per objective) fails with what it
returned, and a value that can only be a programming error (a string, a tuple of the wrong
length) stops the run. An objective that calls `sys.exit` fails
its trial and stops the run; one that outruns `timeout` by its grace period is stopped
(`timeout_grace`) and queued again.
"""

from __future__ import annotations

import logging
import math
import numbers
import reprlib
import signal
import sys
import sysconfig
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError, StudyError
from gentune.progress import TrialProgress
from gentune.settings import check_count, check_seconds
from gentune.study.store import (
    auto_worker_index,
    count_finished,
    counts,
    open_or_create,
    recover_orphans,
    requeue,
    worker_id,
)
from gentune.study.targets import target_of
from gentune.trial.attrs import OptunaKey, StudyKey, TrialKey

POLL_SECONDS = 1.0  # how often an idle worker looks at the study
# A trial still running this long after the run's timeout is stopped: 10% of the timeout, so a
# long run lets a nearly finished trial end, and at least a few seconds for a short one.
GRACE_FRACTION = 0.1
GRACE_MIN_SECONDS = 5.0
# Optuna's callback, called after each finished trial as `study.optimize(callbacks=...)` calls it.
TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


def timeout_grace(timeout: float) -> float:
    """Seconds a trial may run past the run's `timeout` before it is stopped.

    >>> timeout_grace(5), timeout_grace(3600)
    (5.0, 360.0)
    """
    return max(GRACE_MIN_SECONDS, GRACE_FRACTION * timeout)


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or SIGTERM; the running trial was re-queued."""

    def __init__(self, trial_number: int | None):
        self.trial_number = trial_number
        super().__init__(trial_number)


class Surplus(Exception):
    """A fresh trial that another worker's trial already covers; it is failed unrun."""


class TrialFailed(Exception):
    """A trial that gentune failed itself (a bad value, sys.exit, the timeout); its reason is
    stored in the trial's `error` attribute."""


class TrialTimeout(BaseException):
    """Raised in the main thread when a trial outruns the run's timeout and its grace.

    A BaseException, as KeyboardInterrupt is, so that an objective's `except Exception` does
    not swallow it.
    """


@contextmanager
def hard_deadline(at: float | None) -> Iterator[None]:
    """Raise TrialTimeout in this thread at `time.monotonic()` == `at` (None: never).

    A SIGALRM handler, so that it also ends a `time.sleep` or a blocking read, which an
    exception sent from another thread would not. It needs the main thread; elsewhere the
    timeout stays a bound between trials only.
    """
    if at is None or not hasattr(signal, "setitimer"):
        yield
        return
    armed = True

    def handler(signum: int, frame: Any) -> None:
        if armed:
            raise TrialTimeout

    try:
        old = signal.signal(signal.SIGALRM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        signal.setitimer(signal.ITIMER_REAL, max(at - time.monotonic(), 0.001))
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def value_problem(value: Any, n: int = 1) -> tuple[str, bool] | None:
    """None when `value` is one finite number (`n` > 1: a sequence of `n`, one per objective);
    else (what is wrong, whether it can only be a programming error, which stops the run rather
    than fail trial after trial).

    >>> value_problem(0.5) is None, value_problem(float("nan"))
    (True, ('the objective returned nan; it must return one finite number', False))
    >>> value_problem("0.5")
    ("the objective returned '0.5' (type str); it must return one finite number", True)
    >>> value_problem((2.1, 4.0), n=2) is None, value_problem((2.1,), n=2)[0]
    (True, 'the objective returned (2.1,); this study has 2 objectives, so it must return 2 finite numbers')
    """
    if n > 1:
        return _values_problem(value, n)
    expected = "it must return one finite number"
    shown = reprlib.repr(value)
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        return f"the objective returned {shown} (type {type(value).__name__}); {expected}", True
    if value is None:
        return f"the objective returned None (did it reach a return statement?); {expected}", False
    if isinstance(value, (tuple, list)):
        return (
            f"the objective returned {shown}, a {type(value).__name__} of {len(value)} values; "
            f"this study has one objective, so {expected}",
            True,
        )
    shape = getattr(value, "shape", None)
    if shape is not None and tuple(shape) != ():
        return f"the objective returned an array of shape {tuple(shape)}; {expected}", True
    if not isinstance(value, numbers.Real):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return f"the objective returned {shown} (type {type(value).__name__}); {expected}", True
    if not math.isfinite(value):
        return f"the objective returned {float(value)}; {expected}", False
    return None


def _values_problem(value: Any, n: int) -> tuple[str, bool] | None:
    """value_problem for a study of `n` objectives: a sequence of n finite numbers."""
    expected = f"this study has {n} objectives, so it must return {n} finite numbers"
    shown = reprlib.repr(value)
    if value is None:
        return f"the objective returned None (did it reach a return statement?); {expected}", False
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != n:
        return f"the objective returned {shown}; {expected}", True
    problems = [value_problem(v) for v in value]
    fatal = [p for p in problems if p is not None]
    if fatal:
        return f"the objective returned {shown}; {expected}", any(f for _, f in fatal)
    return None


def describe_error(e: BaseException) -> str:
    """'Type: message (at FILE line N)': the line is the innermost one outside Python's own
    library and installed packages, usually the user's, since a trial's traceback is not shown.
    """
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    outside = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith(outside)]
    if frames and frames[-1].lineno:
        text += f" (at {frames[-1].filename} line {frames[-1].lineno})"
    return text


class _NoFailedTrialLog(logging.Filter):
    """Drops Optuna's warning (with a traceback) for each failed trial: the runner stores the
    reason in the trial and the progress display prints it on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and " failed with " in record.getMessage())


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a stopped worker releases its trial the same way."""

    def handler(signum: int, frame: Any) -> None:
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


class SafeInterrupts:
    """Ctrl-C and SIGTERM that stop a run only where stopping is safe.

    Inside the objective (`interruptible()`) a signal raises KeyboardInterrupt at once, so a
    long trial stops. Elsewhere (Optuna asking for a trial, starting its heartbeat thread,
    telling the storage) it is noted and raised at the runner's next `check()`: a signal that
    landed inside Optuna's bookkeeping could leave a trial half made, or a heartbeat thread
    started and never stopped, which keeps the process alive after it says it stopped. A
    second signal before that check raises at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending = False
        self.raising = False  # inside the objective

    def handler(self, signum: int, frame: Any) -> None:
        if self.raising or self.pending:
            raise KeyboardInterrupt
        self.pending = True

    @contextmanager
    def installed(self) -> Iterator[None]:
        try:
            old = {s: signal.signal(s, self.handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread: signals are the main thread's
            yield
            return
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal came since the last check."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self.raising = True
        try:
            self.check()
            yield
        finally:
            self.raising = False


def check_writable(folder: str | Path, option: str = "--runs-dir") -> None:
    """Refuse a folder gentune cannot write its outputs to, before anything trains.

    The nearest part of the path that exists is probed with a temporary file, so a refused
    run leaves nothing behind (the folder itself is made when the study is).
    """
    path = Path(folder)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        problem = f"{probe} is not a folder"
    else:
        try:
            with tempfile.TemporaryFile(dir=probe):
                problem = ""
        except OSError as e:
            problem = f"{probe} is not writable ({e.strerror or e})"
    if problem:
        raise GentuneError(
            f"{option} {path} cannot hold the study's outputs (database, checkpoints, report): {problem}",
            fix=f"pass {option} FOLDER that you can write to"
            + (f", or make {probe} writable" if probe.is_dir() else ""),
        )


def next_move(study: optuna.Study, n_trials: int | None, grid_queue: bool) -> str:
    """'run' a trial, 'wait' for other workers' running trials, or 'done'.

    A grid study hands out only its queued points; other studies start a trial while the
    finished, running and queued trials fall short of the target. Promotions do not count
    towards it (store.counts), and queued ones always run.
    """
    count = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.WAITING or counts(t):
            count[t.state] += 1
    finished = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
    if n_trials is not None and finished >= n_trials:
        return "done"
    if count[TrialState.WAITING]:
        return "run"
    if grid_queue:
        return "wait" if count[TrialState.RUNNING] else "done"
    if n_trials is None or finished + count[TrialState.RUNNING] < n_trials:
        return "run"
    return "wait"


def is_surplus(study: optuna.Study, trial: optuna.Trial, n_trials: int | None, grid_queue: bool) -> bool:
    """Whether a freshly sampled trial lost a race: others started enough trials just before it."""
    if n_trials is None and not grid_queue:
        return False
    trials = study.get_trials(deepcopy=False)
    if OptunaKey.FIXED_PARAMS in trials[trial.number].system_attrs:
        return False  # popped from the queue: it is owed
    if grid_queue or n_trials is None:
        return grid_queue
    ahead = [t for t in trials[: trial.number] if t.state != TrialState.FAIL]
    return len(ahead) >= n_trials


def recover_stale(study: optuna.Study) -> None:
    """Re-queue trials whose heartbeat lapsed (their worker on another machine is gone).

    Optuna does this before each trial a worker starts; an idle worker does it as it waits.
    """
    from optuna.storages import fail_stale_trials

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


class Runner:
    """Runs `objective` on `study` until it holds `n_trials` finished trials or `timeout` passes.

    Failed trials (an exception in training) do not count; after `max_failures` failures in a
    row the run stops with a StudyError naming the last error. A GentuneError in a trial is a
    user's mistake: it stops the run at once rather than fail every trial. `progress` (a
    gentune.progress.TrialProgress or None) is told of every finished trial.

    `callbacks` are Optuna's: each is called as `callback(study, frozen_trial)` after every
    trial this runner finishes, complete, pruned or failed, as `study.optimize` calls them
    (optuna-integration's MLflowCallback and WeightsAndBiasesCallback fit), except a surplus
    trial, which is failed unrun.
    """

    def __init__(
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], Any],  # what it returns is checked (value_problem)
        *,
        n_trials: int | None,
        timeout: float | None,
        progress: Any = None,
        max_failures: int = 5,
        callbacks: Sequence[TrialCallback] = (),
    ):
        self.study, self.objective = study, objective
        self.n_trials, self.timeout, self.progress, self.max_failures = (
            n_trials,
            timeout,
            progress,
            max_failures,
        )
        self.grid_queue = study.user_attrs.get(StudyKey.GRID_QUEUE) is not None
        self.current: int | None = None
        self.failures = 0
        self.fatal: GentuneError | None = None
        self.deadline: float | None = None  # time.monotonic() at which the run stops starting trials
        self.stopped: int | None = None  # the trial the timeout stopped
        self.requeued = False  # whether its parameters were queued again
        self.callbacks = list(callbacks)
        self.signals = SafeInterrupts()

    def _say(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr)

    def run(self) -> None:
        recovered = recover_orphans(self.study)
        if recovered and self.progress is not None:
            self._say(f"re-queued trials {recovered}: their process ended mid-trial")
        quiet = _NoFailedTrialLog()
        optuna_log = logging.getLogger("optuna.study._optimize")
        optuna_log.addFilter(quiet)
        with self.signals.installed():
            try:
                self._loop()
            except KeyboardInterrupt:
                if self.current is not None:  # not a crash: no retry counted against its parameters
                    requeue(self.study, self.study.get_trials(deepcopy=False)[self.current], crashed=False)
                raise Interrupted(self.current) from None
            finally:
                optuna_log.removeFilter(quiet)
        if self.fatal is not None:
            raise self.fatal
        if self.stopped is not None and self.timeout is not None:
            self._say(
                f"--timeout {self.timeout:g} s: trial {self.stopped} was still running "
                f"{timeout_grace(self.timeout):g} s after it and was stopped; "
                + (
                    "its parameters are queued again, and the next run of this study starts with them"
                    if self.requeued
                    else "its parameters were retried too often to be queued again"
                )
            )
        if self.failures >= self.max_failures:
            last = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1]
            error = last.user_attrs.get(TrialKey.ERROR)
            raise StudyError(
                f"{self.max_failures} trials in a row failed; the last error was: {error}",
                fix="fix the cause above and rerun the same command to continue",
            )

    def _loop(self) -> None:
        """Start trials while the study needs them; wait while other workers' trials may fail."""
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while self.fatal is None and self.failures < self.max_failures:
            self.signals.check()
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return
            recover_orphans(self.study)  # a worker of this host that died: its trial, at once
            move = next_move(self.study, self.n_trials, self.grid_queue)
            if move == "done":
                return
            if move == "wait":
                time.sleep(POLL_SECONDS)
                recover_stale(self.study)
            else:
                self._one_trial()
        self.signals.check()

    def _one_trial(self) -> None:
        try:
            self.study.optimize(
                self._tracked, n_trials=1, callbacks=[self._after], catch=(Exception,), gc_after_trial=False
            )
        except Exception:
            # Telling a trial that another worker already failed (its heartbeat lapsed while the
            # database was away) raises; the trial was re-queued there, so this worker goes on.
            number = self.current
            if number is None or self.study.get_trials(deepcopy=False)[number].state != TrialState.FAIL:
                raise

    def _tracked(self, trial: optuna.Trial) -> float | list[float]:
        self.current = trial.number
        if is_surplus(self.study, trial, self.n_trials, self.grid_queue):
            trial.set_user_attr(TrialKey.SURPLUS, True)
            raise Surplus("another worker's trial already covers this one; not run")
        trial.set_user_attr(TrialKey.WORKER, worker_id())
        stop_at = None
        if self.deadline is not None and self.timeout is not None:
            stop_at = self.deadline + timeout_grace(self.timeout)
        try:
            with hard_deadline(stop_at), self.signals.interruptible():
                value = self.objective(trial)
        except optuna.TrialPruned:  # stopped early on purpose (pruner, detector): no error
            raise
        except GentuneError as e:
            self.fatal = e
            trial.set_user_attr(TrialKey.ERROR, str(e))
            raise
        except Exception as e:
            trial.set_user_attr(TrialKey.ERROR, describe_error(e))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(TrialKey.INTERRUPTED, True)
            raise
        except TrialTimeout:
            assert self.timeout is not None
            why = (
                f"stopped: still running {timeout_grace(self.timeout):g} s after the run's "
                f"timeout of {self.timeout:g} s"
            )
            self.stopped = trial.number
            trial.set_user_attr(TrialKey.ERROR, why)
            raise TrialFailed(why) from None
        except SystemExit as e:
            why = f"the objective called sys.exit({e.code!r}), which would end gentune mid-trial"
            trial.set_user_attr(TrialKey.ERROR, why)
            self.fatal = GentuneError(
                f"trial {trial.number} failed: {why}",
                fix="return the trial's value, or raise an exception to fail the trial, instead "
                "of calling sys.exit() or exit() in the objective",
            )
            raise TrialFailed(why) from None
        n = len(self.study.directions)
        problem = value_problem(value, n)
        if problem is None:
            return float(value) if n == 1 else [float(v) for v in value]
        why, fatal = problem
        trial.set_user_attr(TrialKey.ERROR, why)
        if fatal:
            self.fatal = GentuneError(
                f"trial {trial.number} failed: {why}",
                fix="return a float, e.g. `return float(score)`"
                if n == 1
                else f"return {n} floats, one per objective, e.g. `return fid, seconds`",
            )
        raise TrialFailed(why)

    def _after(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.current = None
        if trial.user_attrs.get(TrialKey.SURPLUS):
            return
        if trial.number == self.stopped and trial.state == TrialState.FAIL:
            # Nothing is lost: the next run starts with it. It counts as a retry, so that
            # parameters that hang every time are given up after the cap.
            requeue(study, trial)
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            self.requeued = any(t.user_attrs.get(TrialKey.RETRY_OF) == trial.number for t in waiting)
        else:
            self.failures = self.failures + 1 if trial.state == TrialState.FAIL else 0
        if self.progress is not None:
            _report_progress(self.progress, study, trial)
        for callback in self.callbacks:
            callback(study, trial)


def _report_progress(progress: Any, study: optuna.Study, trial: FrozenTrial) -> None:
    if len(study.directions) > 1:
        return _report_front_progress(progress, study, trial)
    best, best_number = None, None
    try:
        best_trial = study.best_trial
        best, best_number = best_trial.value, best_trial.number
    except ValueError:  # no completed trial yet
        pass
    note = ""
    if trial.state == TrialState.PRUNED:
        note = f" ({trial.user_attrs.get(TrialKey.PRUNE_REASON, 'pruned')})"
    elif trial.state == TrialState.FAIL:
        note = f" ({trial.user_attrs.get(TrialKey.ERROR, 'failed')})"
    counted = counts(trial)
    if not counted:
        attrs = trial.user_attrs
        note += f" (rung {attrs.get(TrialKey.RUNG)}, continued trial {attrs.get(TrialKey.PROMOTED_FROM)})"
    progress.trial_finished(
        trial.number, trial.state.name.lower(), trial.value, best, best_number, note, counts=counted
    )


def _report_front_progress(progress: Any, study: optuna.Study, trial: FrozenTrial) -> None:
    """A multi-objective trial's line: its first value as the value, the others in the note,
    and the best first value so far (the front itself is for gentune best and the report)."""
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    note = ""
    if trial.values:
        note = " (" + ", ".join(f"{n}={v:.4g}" for n, v in zip(names[1:], trial.values[1:])) + ")"
    elif trial.state == TrialState.PRUNED:
        note = f" ({trial.user_attrs.get(TrialKey.PRUNE_REASON, 'pruned')})"
    elif trial.state == TrialState.FAIL:
        note = f" ({trial.user_attrs.get(TrialKey.ERROR, 'failed')})"
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(done, key=lambda t: sign * t.values[0], default=None)
    progress.trial_finished(
        trial.number,
        trial.state.name.lower(),
        trial.values[0] if trial.values else None,
        None if best is None else best.values[0],
        None if best is None else best.number,
        note,
    )


def progress_display(enabled: bool, trials: int | None, study: optuna.Study, metric: str) -> Any:
    """The live display of a run (a context manager yielding it), or one yielding None."""
    if not enabled:
        return nullcontext(None)
    return TrialProgress(trials, count_finished(study), metric=metric)


def check_work_values(
    *, trials: int | None, timeout: float | None, runs_dir: str | Path, threads: int | None
) -> None:
    """Refuse a worker's bad --trials, --timeout, --runs-dir or --threads before it opens the
    study, so a typo is named as such rather than as a storage or study problem."""
    check_count("--trials", trials, example=20)
    check_seconds("--timeout", timeout, example=3600)
    check_writable(runs_dir)
    check_count("--threads", threads, example=1)


def work(
    study: str,
    storage: str,
    *,
    objective: Callable[[optuna.Trial], float] | None = None,
    data_dir: Any = None,
    data: Any = None,
    device: str = "auto",
    trials: int | None = None,
    timeout: float | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    worker_index: int | None = 0,
    threads: int | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> optuna.Study:
    """Run trials of the existing study `study` until it holds `trials` finished trials.

    Everything else (model, data, space, budget, metric; or the user's objective) comes from
    the settings stored in the study, so this is what a worker on another machine runs.
    `objective` is a user's objective function, and `data` the study's dataset, already loaded in
    this process. `trials`
    defaults to the target stored by `gentune tune`. Each worker seeds its sampler with the
    study seed + `worker_index` (None: an index drawn from this worker's host and pid), and
    starts a stream of its own when it resumes a study or other processes share it
    (gentune.search.strategies.StreamSampler), so no process repeats another's draws;
    `threads` caps torch's threads, so that workers sharing a machine do not oversubscribe it;
    `callbacks` are called after each finished trial, as `study.optimize` calls them (Runner).
    """
    if worker_index is None:
        worker_index = auto_worker_index()
    check_work_values(trials=trials, timeout=timeout, runs_dir=runs_dir, threads=threads)
    if threads is not None:
        torch.set_num_threads(threads)
    target = target_of(open_or_create(study, storage), objective, data)
    opened = open_or_create(study, storage, sampler=target.sampler(worker_index), pruner=target.pruner())
    if trials is None:
        trials = opened.user_attrs.get(StudyKey.TARGET_TRIALS)
    with progress_display(progress, trials, opened, target.metric) as bar:
        fn = target.objective(opened, runs_dir=Path(runs_dir), data_dir=data_dir, device=device, progress=bar)
        Runner(opened, fn, n_trials=trials, timeout=timeout, progress=bar, callbacks=callbacks).run()
    return opened
