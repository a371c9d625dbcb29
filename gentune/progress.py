"""The progress display: trial k of N, best so far, ETA, and the running trial's steps.

On a terminal it is a live rich display; elsewhere (CI logs, pipes) it prints one plain line
per finished trial and a line at each quarter of a trial's steps (with the value last measured
during training), so logs stay readable. Work before the first trial (the feature extractor's
training, the floor) is shown the same way, and `print_banner` says where a run's study lives
and how to resume it.
Every line is printed as plain text: parameter values and error messages may hold brackets,
which rich would otherwise read as markup. The count of done trials is of complete and pruned
ones, the trials that count towards the study's target; failed trials are reported, not counted.
"""

from __future__ import annotations

import sys
import time
from typing import NamedTuple

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

COUNTED = ("complete", "pruned")  # the states that count towards a study's target
SHOWN = {"fail": "failed"}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Bars(NamedTuple):
    """The live display, on a terminal only."""

    progress: Progress
    trials: TaskID
    steps: TaskID


class TrialProgress:
    """Tracks a study's run. Use as a context manager around `study.optimize`."""

    def __init__(
        self, total: int | None, done: int = 0, *, metric: str = "value", console: Console | None = None
    ):
        self.total, self.done, self.metric = total, done, metric
        # soft_wrap: long lines stay whole in logs instead of being cut at 80 columns
        self.console = console or Console(file=sys.stderr, soft_wrap=True)
        self.live = self.console.is_terminal
        self.best: float | None = None
        self.best_trial: int | None = None
        self._start = time.monotonic()
        self._finished_here = 0
        self._bars: _Bars | None = None
        self._population: tuple[int, int] | None = None  # (members alive, their G steps)
        self._last_quarter = -1
        self._measured: tuple[int, float | None] | None = None  # the running trial's last evaluation
        self._stages: dict[str, tuple[float, TaskID | None, int]] = {}  # started, bar, quarter shown
        self._running_shown: dict[int, int] = {}  # other processes' trials: the step last printed

    def __enter__(self) -> TrialProgress:
        if self.live:
            progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            progress.start()
            trials = progress.add_task(
                "trials", total=self.total, completed=self.done, info=self._best_info()
            )
            steps = progress.add_task("  steps", total=1, completed=0, info="")
            self._bars = _Bars(progress, trials, steps)
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.progress.stop()

    def _best_info(self) -> str:
        if self.best is None:
            return "best -"
        return f"best {self.metric} {_fmt(self.best)} (trial {self.best_trial})"

    def eta(self) -> float | None:
        """Seconds left, from the mean time of the trials finished in this run."""
        if not self.total or not self._finished_here:
            return None
        per_trial = (time.monotonic() - self._start) / self._finished_here
        return per_trial * max(0, self.total - self.done)

    def prepare(self, stage: str, done: int, total: int) -> None:
        """Work before the first trial (`stage`: what it is, e.g. the feature extractor's
        training, or the floor), `done` of `total` units: a bar of its own on a terminal, else a
        line when it starts, at each quarter and when it ends with its seconds. The callback
        gentune.metrics.Evaluator takes as `progress`."""
        if stage not in self._stages:
            task = None
            if self._bars is not None:
                task = self._bars.progress.add_task(f"  {stage}", total=total, completed=done, info="")
            else:
                self.console.print(f"{stage} ...", markup=False, highlight=False)
            self._stages[stage] = (time.monotonic(), task, 0)
        started, task, quarter = self._stages[stage]
        if task is not None and self._bars is not None:
            self._bars.progress.update(task, total=total, completed=done)
        elif 0 < 4 * done // max(total, 1) < 4 and 4 * done // max(total, 1) != quarter:
            quarter = 4 * done // max(total, 1)
            self._stages[stage] = (started, task, quarter)
            self.console.print(f"  {done}/{total}", markup=False, highlight=False)
        if done >= total:
            if task is not None and self._bars is not None:
                self._bars.progress.remove_task(task)
            self.console.print(
                f"{stage}: done in {time.monotonic() - started:.1f} s", markup=False, highlight=False
            )
            del self._stages[stage]

    def evaluated(self, step: int, value: float | None) -> None:
        """The running trial's objective as measured during training at `step`: shown on the
        live display's steps line, and in the plain log's next step line."""
        self._measured = (step, value)
        if self._bars is not None:
            self._bars.progress.update(self._bars.steps, info=self._measured_info())

    def running(self, trials: dict[int, tuple[int, float, int | None]]) -> None:
        """Trials that other processes run (`gentune tune --workers`), as their storage shows
        them: {number: (last step evaluated, value there, its total steps or None)}. A bar of
        their steps on a terminal; else a line each time one of them reports a new evaluation."""
        if self._bars is not None:
            numbers = ", ".join(str(n) for n in sorted(trials))
            totals = [total for _, _, total in trials.values() if total]
            self._bars.progress.update(
                self._bars.steps,
                description=f"  running: {numbers or '-'}",
                total=sum(totals) if trials and len(totals) == len(trials) else None,
                completed=sum(step for step, _, _ in trials.values()),
                info=", ".join(
                    f"{n}: {self.metric} {_fmt(v)} at {s}" for n, (s, v, _) in sorted(trials.items())
                ),
            )
            return
        shown = self._running_shown
        for number, (step, value, total) in sorted(trials.items()):
            if shown.get(number) != step:
                of = f"/{total}" if total else ""
                self.console.print(
                    f"  trial {number} at step {step}{of}: {self.metric}={_fmt(value)}",
                    markup=False,
                    highlight=False,
                )
        self._running_shown = {n: step for n, (step, _, _) in trials.items()}

    def _measured_info(self) -> str:
        if self._measured is None:
            return ""
        step, value = self._measured
        return f"{self.metric} {_fmt(value)} at step {step}"

    def trial_started(self, number: int, params: dict) -> None:
        self._last_quarter = -1
        self._measured = None
        if self._bars is not None:
            self._bars.progress.update(
                self._bars.steps, description=f"  trial {number}", completed=0, info=""
            )
        else:
            k = self.done + 1
            # Past the total only trials that are not counted start (promotions): no count.
            count = "" if self.total and k > self.total else f" ({k}{f'/{self.total}' if self.total else ''})"
            self.console.print(f"trial {number}{count} started: {params}", markup=False, highlight=False)

    def step(self, step: int, total: int) -> None:
        if self._bars is not None:
            self._bars.progress.update(self._bars.steps, total=total, completed=step)
            return
        quarter = 4 * step // max(total, 1)
        if quarter != self._last_quarter and 0 < quarter < 4:
            self._last_quarter = quarter
            measured = self._measured_info()
            self.console.print(
                f"  step {step}/{total}" + (f", {measured}" if measured else ""),
                markup=False,
                highlight=False,
            )

    def population(self, alive: int, steps: int) -> None:
        """A population's state (gentune.phases.population): members training, and their G
        steps in all; shown on the live display's second line and in each finished-trial line."""
        self._population = (alive, steps)
        if self._bars is not None:
            self._bars.progress.update(
                self._bars.steps, description=f"  population: {alive} training", total=None, completed=steps
            )

    def trial_finished(
        self,
        number: int,
        state: str,
        value: float | None,
        best: float | None,
        best_trial: int | None,
        note: str = "",
        counts: bool = True,
    ) -> None:
        """One finished trial's line; `counts` False: it is not one of the run's --trials (a
        promotion continuing another trial), so the count and the eta stay as they were."""
        if state in COUNTED and counts:
            self.done += 1
            self._finished_here += 1
        self.best, self.best_trial = best, best_trial
        eta = self.eta()
        line = (
            f"trial {number} {SHOWN.get(state, state)}: {self.metric}={_fmt(value)}{note}  |  {self.done}"
            f"{'/' + str(self.total) if self.total else ''} done, {self._best_info()}, "
            + (f"{self._population[0]} members training, " if self._population else "")
            + f"elapsed {_clock(time.monotonic() - self._start)}"
            + (f", eta {_clock(eta)}" if eta is not None else "")
        )
        if self._bars is not None:
            self._bars.progress.update(self._bars.trials, completed=self.done, info=self._best_info())
            self._bars.progress.console.print(line, markup=False, highlight=False)
        else:
            self.console.print(line, markup=False, highlight=False)


def print_banner(
    study: str, storage: str, out_dir: str, resume: str, *, console: Console | None = None
) -> None:
    """The lines a run starts with: which study, where it is stored and written, and how to go
    on after a stop (`resume`: the command, or what to call again). `storage` is printed as given,
    so pass it with any password hidden."""
    console = console or Console(file=sys.stderr, soft_wrap=True)
    for line in (
        f"study {study}",
        f"  storage: {storage}",
        f"  outputs: {out_dir}",
        f"  resume:  {resume}",
    ):
        console.print(line, markup=False, highlight=False)
