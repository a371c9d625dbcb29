"""N worker processes on one study, on this machine (the rules each follows: gentune.study.runner).

The supervisor (`run_workers`) runs N worker processes sharing the study's storage. Each
worker is `gentune worker --study NAME --storage URL`, the same command a worker on another
machine runs, so one code path serves both. The supervisor only supervises: it splits
the CPU threads (and the GPUs) between the workers, shows the study's progress from the
storage, restarts a worker that was killed, and on Ctrl-C stops the workers so that each
releases its trial (queued again, so nothing is lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError, StudyError
from gentune.settings import StudySettings, is_user_study, rung_steps
from gentune.study.runner import POLL_SECONDS, Interrupted, sigterm_as_interrupt, timeout_grace
from gentune.study.store import FINISHED, count_finished, counts, open_or_create
from gentune.trial import attrs

STORAGE_ENV = "GENTUNE_STORAGE"  # read by `gentune worker --storage` (gentune.cli)
STOP_GRACE_SECONDS = 60.0  # how long a stopped worker may take to release its trial


def default_threads(workers: int, cpus: int | None = None) -> int:
    """Torch threads per worker: the cores split evenly, at least one.

    >>> default_threads(2, cpus=16), default_threads(4, cpus=2)
    (8, 1)
    """
    return max(1, (cpus or os.cpu_count() or 1) // workers)


def worker_devices(
    workers: int, device: str = "auto", gpus: list[int] | None = None, n_cuda: int | None = None
) -> list[str]:
    """The device of each worker: one GPU each, round-robin, when there are GPUs to share.

    `gpus` lists GPU indices to use; without it, `device` auto (or cuda) on a machine with
    several GPUs uses all of them.

    >>> worker_devices(3, gpus=[0, 1])
    ['cuda:0', 'cuda:1', 'cuda:0']
    >>> worker_devices(2, "auto", n_cuda=0)
    ['auto', 'auto']
    """
    if gpus is None and device in ("auto", "cuda"):
        if n_cuda is None:
            import torch

            n_cuda = torch.cuda.device_count()
        if n_cuda > 1:
            gpus = list(range(n_cuda))
    if not gpus:
        return [device] * workers
    return [f"cuda:{gpus[i % len(gpus)]}" for i in range(workers)]


def parse_gpus(text: str | None) -> list[int] | None:
    """'0,1' -> [0, 1]; None or '' -> None.

    >>> parse_gpus("0, 2")
    [0, 2]
    """
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GentuneError(
            "--gpus must list GPU indices separated by commas", value=text, fix="e.g. --gpus 0,1"
        ) from None


def worker_command(
    study: str,
    index: int,
    *,
    device: str,
    threads: int,
    trials: int | None,
    timeout: float | None,
    data_dir,
    runs_dir,
    population: int | None = None,
) -> list[str]:
    """The `gentune worker` command line of worker `index`; the storage URL goes in its
    environment (`_spawn`), where `ps` does not show a database password."""
    cmd = [
        sys.executable,
        "-m",
        "gentune",
        "worker",
        "--study",
        study,
        "--worker-index",
        str(index),
        "--device",
        device,
        "--threads",
        str(threads),
        "--runs-dir",
        str(runs_dir),
        "--no-progress",
    ]
    if trials is not None:
        cmd += ["--trials", str(trials)]
    if timeout is not None:
        cmd += ["--timeout", str(timeout)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if population is not None:
        cmd += ["--population", str(population)]
    return cmd


def _spawn(cmd: list[str], threads: int, storage: str) -> subprocess.Popen:
    # Native thread pools (OpenMP, BLAS) read these before torch's set_num_threads runs.
    env = {
        **os.environ,
        STORAGE_ENV: storage,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
    }
    # A session of its own: Ctrl-C reaches only this supervisor, which stops each worker once.
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def run_workers(
    study: str,
    storage: str,
    workers: int,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    gpus: list[int] | None = None,
    threads: int | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    metric: str = "value",
    max_restarts: int | None = None,
    population: int | None = None,
) -> None:
    """Run `workers` processes on the existing study until it holds `trials` finished trials;
    in a population study each trains `population` members at once (default: the study's K).

    A worker killed by a signal (out of memory, kill -9) is restarted, at most `max_restarts`
    times in all (default: `workers`); its trial is re-queued by the others. Ctrl-C stops
    every worker, each releasing its trial, and raises Interrupted.
    """
    if workers < 1:
        raise GentuneError("--workers must be at least 1", value=workers, fix="pass --workers 2")
    threads = threads or default_threads(workers)
    devices = worker_devices(workers, device, gpus)
    commands = [
        worker_command(
            study,
            i,
            device=devices[i],
            threads=threads,
            trials=trials,
            timeout=timeout,
            data_dir=data_dir,
            runs_dir=runs_dir,
            population=population,
        )
        for i in range(workers)
    ]
    opened = open_or_create(study, storage)
    restarts_left = workers if max_restarts is None else max_restarts
    # Each worker stops its own trial past the timeout; one stuck where a signal cannot reach
    # it (inside native code) is stopped from here, after twice the grace.
    hard_stop = None if timeout is None else time.monotonic() + timeout + 2 * timeout_grace(timeout)
    procs = {i: _spawn(cmd, threads, storage) for i, cmd in enumerate(commands)}
    failed: dict[int, int] = {}
    with _Reporter(progress, opened, trials, metric) as reporter, sigterm_as_interrupt():
        try:
            while procs:
                time.sleep(POLL_SECONDS)
                reporter.update()
                if hard_stop is not None and time.monotonic() > hard_stop:
                    reporter.note(f"--timeout {timeout:g} s: stopping the workers that still run")
                    _stop(procs.values())
                    procs.clear()
                    break
                for i, proc in list(procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del procs[i]
                    if code < 0 and restarts_left > 0 and not _complete(opened, trials):
                        restarts_left -= 1
                        reporter.note(f"worker {i} was killed (signal {-code}); restarting it")
                        # a fresh index: the same seed would replay the killed worker's draws
                        index = len(commands)
                        commands.append(
                            worker_command(
                                study,
                                index,
                                device=devices[i],
                                threads=threads,
                                trials=trials,
                                timeout=timeout,
                                data_dir=data_dir,
                                runs_dir=runs_dir,
                                population=population,
                            )
                        )
                        procs[i] = _spawn(commands[-1], threads, storage)
                    elif code != 0:
                        failed[i] = code
            reporter.update()
        except KeyboardInterrupt:
            _stop(procs.values())
            reporter.update()
            raise Interrupted(None) from None
    if failed and not _complete(opened, trials):
        codes = ", ".join(f"worker {i}: exit {c}" for i, c in sorted(failed.items()))
        raise StudyError(
            f"the study stopped short of its target ({codes}); the workers' errors are printed above",
            fix="fix the cause and rerun the same command to continue",
        )


def _complete(study: optuna.Study, trials: int | None) -> bool:
    return trials is not None and count_finished(study) >= trials


def _stop(procs) -> None:
    """SIGINT each worker (it releases its trial), then wait; kill those that hang."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()  # its trial is recovered by the next run (dead pid on this host)
            proc.wait()


def _budget_steps(study: optuna.Study) -> tuple[int | None, int]:
    """G steps per trial of a built-in family's study (None: a user's objective, an epochs
    budget, or a family from a user's file, which the supervisor does not import), and the
    promotion rungs under them (a trial of rung r trains `rung_steps(steps, r, below)`)."""
    from gentune.families import MODELS, get_family

    stored = attrs.settings(study)
    if not stored or is_user_study(stored) or stored.get("model") not in MODELS:
        return None, 0
    settings = StudySettings.from_dict(stored)
    steps = settings.budget_for(get_family(settings.model, settings.dataset_ref.kind)).get("steps")
    return steps, settings.rungs_below


class _Reporter:
    """The study's progress, read from the storage: the workers print nothing themselves."""

    def __init__(self, enabled: bool, study: optuna.Study, trials: int | None, metric: str):
        from gentune.progress import TrialProgress

        self.study = study
        self.bar = TrialProgress(trials, count_finished(study), metric=metric) if enabled else None
        done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
        self.seen = {t.number for t in done}
        # A multi-objective study shows its first objective here; the front is for best/report.
        minimize = study.directions[0].name == "MINIMIZE"
        self.better = (lambda a, b: a < b) if minimize else (lambda a, b: a > b)
        scored = [(_first(t), t.number) for t in done if t.state in FINISHED and t.values]
        self.best = (min if minimize else max)(scored, default=None)
        self.steps, self.below = _budget_steps(study)

    def __enter__(self) -> _Reporter:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False)

    def update(self) -> None:
        if self.bar is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        new = [t for t in trials if t.state.is_finished() and t.number not in self.seen]
        for t in sorted(new, key=lambda t: t.datetime_complete or t.datetime_start or datetime.min):
            self.seen.add(t.number)
            if t.state == TrialState.FAIL:
                if not attrs.surplus(t):
                    why = attrs.error(t) or "its worker stopped; re-queued"
                    self.note(f"trial {t.number} failed ({why})")
                continue
            if t.values and (self.best is None or self.better(_first(t), self.best[0])):
                self.best = (_first(t), t.number)
            best, number = self.best or (None, None)
            why = f"{attrs.prune_reason(t) or 'pruned'}, " if t.state == TrialState.PRUNED else ""
            if not counts(t):  # a promotion: not one of the --trials, as work's lines say
                why += f"rung {attrs.rung(t)}, continued trial {attrs.promoted_from(t)}, "
            self.bar.trial_finished(
                t.number,
                t.state.name.lower(),
                _first(t) if t.values else None,
                best,
                number,
                f" ({why}worker {attrs.worker(t) or '?'})",
                counts=counts(t),
            )
        # The running trials' steps as far as their evaluations show them: the workers write
        # nothing else while they train, and a write per step would load a shared database.
        # Of its own total: a promotion rung ends at 889, 2667, ... 24000 steps, not the study's.
        running = {
            t.number: (last, t.intermediate_values[last], self._total(t))
            for t in trials
            if t.state == TrialState.RUNNING and t.intermediate_values
            for last in [max(t.intermediate_values)]
        }
        self.bar.running(running)

    def _total(self, trial: FrozenTrial) -> int | None:
        """The G steps `trial` trains to: its promotion rung's, else the study's."""
        return None if self.steps is None else rung_steps(self.steps, attrs.rung(trial), self.below)


def _first(trial: FrozenTrial) -> float:
    """A finished trial's value, or its first objective's in a multi-objective study."""
    return trial.values[0]
