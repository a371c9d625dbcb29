"""The search drives a population: K trials train at once, batched, and the good ones go on.

`work_population` is `gentune.study.runner.work` for a study whose settings ask for a
population (`--population K|auto`, `--strategy pbt`): it runs the study's trials in this process
until the study holds its target, K at a time, on `gentune.train.population.Population`.

- **Asking.** Trials are asked from the study (its sampler: TPE with constant liar, so K
  trials asked at once differ). A fresh trial takes the structure of the largest open
  population (`_joining_structure`) and the sampler draws its per-member hyperparameters, so it
  stacks there; each trial joins the population of its `family.population_key` (a new one when
  none accepts it). Every population steps one log window at a time, and all members due an
  evaluation are sampled and scored in one batched pass
  (`Evaluator.evaluate_many`). Each member reports to its own trial, and its own
  `TrainingMonitor` runs the pruner and the failure detectors on it, exactly as for a trial
  trained alone; the final scoring, attributes and checkpoint are `GenerativeObjective.score`'s.
- **Continuous batching.** A member that finishes, is pruned, diverges or fails leaves, and its
  slot is filled at once: by a promotion (gentune.phases.promotion), else a newly asked trial,
  until the study's target or --timeout.
- **PBT** (gentune.phases.pbt): after each evaluation the bottom quarter of a population is
  replaced by perturbed copies of its top quarter.
- **Workers.** Several processes may run one study (`gentune tune` on a CPU starts one per
  core, each with its share of K; `gentune worker`), each with populations of its own. Those
  on one machine fill their slots under a file lock in runs/<study>/, so no trial is promoted
  twice. Once no configuration is left to ask, a process whose members still train leaves a
  promotion of another structure to an idle one: on the CPU two single members in one
  process only take turns, while two processes train them side by side.
- **Resume.** Every member is an ordinary RUNNING trial of this process (worker attribute,
  heartbeats), so Ctrl-C re-queues them all, and a process killed outright has them re-queued
  by the next run (gentune.study.store.recover_orphans) or by another worker (heartbeats); a
  continued trial re-runs from the state file it started from.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from filelock import FileLock
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError
from gentune.phases.pbt import pairs, perturb
from gentune.phases.promotion import candidate, promote, rung_steps, state_path, top_rung
from gentune.settings import StudySettings
from gentune.study.runner import (
    POLL_SECONDS,
    Interrupted,
    _report_progress,
    check_work_values,
    describe_error,
    next_move,
    progress_display,
    recover_stale,
    sigterm_as_interrupt,
    timeout_grace,
)
from gentune.study.storage import heartbeat_interval
from gentune.study.store import (
    auto_worker_index,
    open_or_create,
    recover_orphans,
    requeue,
    stored_settings,
    worker_id,
)
from gentune.study.targets import BuiltinTarget, target_of
from gentune.train.loop import TrainResult, check_budget
from gentune.train.population import SETTABLE, Population
from gentune.trial import attrs
from gentune.trial.attrs import StudyKey, TrialKey
from gentune.trial.monitor import TrainingMonitor
from gentune.trial.objective import EVAL_SEED, GenerativeObjective

AUTO_MAX = 256  # the largest K that --population auto tries
AUTO_SECONDS = 1.0  # measured per K
AUTO_GAIN = 1.1  # a larger K must give 10% more model-steps/s to be taken
COHORT = 2  # a population takes in up to COHORT x K fresh members of its structure,
STRUCTURES = 10  # and at most 1/STRUCTURES of the study's configurations (at least 2)
FILL_LOCK = ".fill.lock"  # in runs/<study>/: held while a worker fills its slots


@dataclass
class Member:
    """One trial training in a population slot."""

    trial: optuna.Trial
    family: Any
    config: Any
    seed: int
    pop: Population
    slot: int
    monitor: TrainingMonitor
    target: int  # the G step at which the trial ends (its rung's budget)
    start: int  # the G step it started from (0, or a continued state's)
    t0: float = field(default_factory=time.perf_counter)
    signals: dict = field(default_factory=dict)
    value: float | None = None  # the last value reported
    evaluated_at: int = -1  # the step of that report

    @property
    def steps(self) -> int:
        return self.pop.steps(self.slot)

    def accepts(self, params: dict) -> bool:
        """Whether `params` (this member's, changed) can continue in this member's population."""
        try:
            config = self.family.config_cls.from_dict({**self.config.to_dict(), **params})
        except GentuneError:
            return False
        return bool(self.family.population_key(config) == self.family.population_key(self.config))


class _Scored:
    """An evaluator whose answer for one member was computed in the population's batched pass;
    anything else goes to the real one."""

    def __init__(self, evaluator: Any, metrics: dict | None):
        self.evaluator, self.metrics = evaluator, metrics

    def evaluate(self, images: torch.Tensor, keys: Any = None) -> dict:
        return self.metrics if self.metrics is not None else self.evaluator.evaluate(images, keys=keys)


class PopulationRun:
    """Runs `study`'s trials K at a time until it holds `n_trials` finished trials or `timeout`
    passes (see the module docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        objective: GenerativeObjective,
        *,
        k: int,
        n_trials: int | None,
        timeout: float | None,
        progress: Any = None,
        callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    ):
        self.study, self.objective, self.k = study, objective, k
        self.callbacks = list(callbacks)
        self.n_trials, self.timeout, self.progress = n_trials, timeout, progress
        self.settings: StudySettings = objective.settings
        self.pbt = self.settings.strategy == "pbt"
        self.minimize = self.settings.direction == "minimize"
        self.out_dir = objective.out_dir
        self.members: list[Member] = []
        self.admitted: dict[int, int] = {}  # members each population (by id) has taken in
        self.cohort = cohort(k, n_trials)
        self.pops: list[Population] = []
        self.grid_queue = attrs.has_grid_queue(study)
        self.top_rung = top_rung(self.settings.rungs_below, timeout)
        # Workers on this machine fill their slots one at a time: two would otherwise promote
        # the same trial, or one would ask the trial the other just queued.
        self.fill_lock = FileLock(self.out_dir / FILL_LOCK)
        self.rng = random.Random(self.settings.seed)
        self.deadline: float | None = None
        self.beat = 0.0

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        recovered = recover_orphans(self.study)
        if recovered and self.progress is not None:
            self.progress.console.print(f"re-queued trials {recovered}: their process ended mid-trial")
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with sigterm_as_interrupt():
            try:
                self._loop()
            except KeyboardInterrupt:
                first = self.members[0].trial.number if self.members else None
                for m in list(self.members):
                    m.trial.set_user_attr(TrialKey.INTERRUPTED, True)
                    self._end(m, TrialState.FAIL, requeue_as=False)
                raise Interrupted(first) from None

    def _loop(self) -> None:
        while True:
            with self.fill_lock:
                self._fill()
            if not self.members:
                if (self._move() != "wait" and not self._promotions_pending()) or self._past(0.0):
                    return
                time.sleep(POLL_SECONDS)  # other workers' trials may still fail and be queued
                recover_stale(self.study)
                continue
            assert self.timeout is not None or self.deadline is None
            if self.deadline is not None and self._past(timeout_grace(self.timeout or 0)):
                for m in list(self.members):  # as the Runner does: stopped, queued again
                    m.trial.set_user_attr(TrialKey.ERROR, "stopped: still running after the run's timeout")
                    self._end(m, TrialState.FAIL, requeue_as=True)
                return
            for pop in list(self.pops):
                if pop.alive and not self._past(timeout_grace(self.timeout or 0)):
                    self._advance(pop)
                self._heartbeat()

    def _past(self, grace: float) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline + grace

    def _move(self) -> str:
        return next_move(self.study, self.n_trials, self.grid_queue)

    def _promotions_pending(self) -> bool:
        """Whether other workers' trials still run that may end in a promotion this process
        can train (the study holds its configurations, and the ladder is not done)."""
        if not self.settings.promotion:
            return False
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        return any(attrs.rung(t) < self.top_rung for t in running)

    def _fill(self) -> None:
        """Fill free slots: a promotion first, else a newly asked (or re-queued) trial."""
        while len(self.members) < self.k and not self._past(0.0):
            move = self._move()
            best = None
            if self.settings.promotion:
                best = candidate(
                    self.study,
                    self.out_dir,
                    minimize=self.minimize,
                    draining=move != "run",
                    top_rung=self.top_rung,
                )
            if best is not None and move != "run" and self.members and not self._stacks(best):
                # Draining: a promotion of another structure would only take turns with this
                # process's members; an idle worker takes it, or this one once its members end.
                return
            if best is not None:
                promote(self.study, best)
            elif move != "run":
                return
            elif not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                structure = self._pbt_structure() if self.pbt else self._joining_structure()
                if structure:  # the sampler draws the rest: the hyperparameters members hold each
                    self.study.enqueue_trial(structure)
            self._start(self._ask())

    def _stacks(self, trial: FrozenTrial) -> bool:
        """Whether `trial`'s configuration can join one of this process's populations."""
        stored = attrs.config(trial)
        if stored is None:  # no configuration stored: nothing to compare, take it
            return True
        config = self.objective.family.config_cls.from_dict(stored)
        return any(p.accepts(config) for p in self.pops)

    def _joining_structure(self) -> dict[str, Any]:
        """The structure a fresh trial takes to stack with others: that of the largest
        population still open (it has admitted fewer than `cohort` members, and none of them
        was pruned or stopped by a detector); {} when none is, and the sampler then draws a new
        structure for a new population. Members of different structures would only take turns
        on the device, so the slots fill with stacked members, while a structure that fails is
        dropped at once and the search moves on to new structures every `cohort` trials."""
        open_ = [p for p in self.pops if self.admitted.get(id(p), 0) < self.cohort]
        if self.k == 1 or not open_:
            return {}
        host = max(open_, key=lambda p: len(p.alive))
        first = next(m for m in self.members if m.pop is host)
        tuned = self.objective.space.tuned()
        return {n: v for n, v in first.trial.params.items() if n in tuned and n not in SETTABLE}

    def _pbt_structure(self) -> dict[str, Any]:
        """The parameters every PBT member shares: the family's defaults, or the space's fixed
        values, for each tuned parameter that a population cannot hold per member."""
        family = self.objective.family
        defaults = family.config_cls().to_dict()
        tuned = self.objective.space.tuned()
        return {name: defaults[name] for name in tuned if name not in SETTABLE and name in defaults}

    # -- members ------------------------------------------------------------------------------

    def _ask(self) -> optuna.Trial:
        with warnings.catch_warnings():
            # Optuna warns that heartbeats go with `optimize`; _heartbeat sends them here.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            return self.study.ask()

    def _start(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(TrialKey.WORKER, worker_id())
        try:
            family, config, seed = self.objective.begin(trial)
            state = self._start_state(trial)
            pop = next((p for p in self.pops if p.accepts(config)), None)
            if pop is None:
                pop = Population(
                    family, self.objective.data, capacity=self.k, device=str(self.objective.device)
                )
                self.pops.append(pop)
            slot = pop.add(config, seed=seed, state=state)
            self.admitted[id(pop)] = self.admitted.get(id(pop), 0) + 1
        except GentuneError as e:
            trial.set_user_attr(TrialKey.ERROR, str(e))
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as e:  # noqa: BLE001 - one configuration failed to start; the study goes on
            trial.set_user_attr(TrialKey.ERROR, describe_error(e))
            self._told(trial, TrialState.FAIL)
            return
        budget = self._budget(family, config)
        target = rung_steps(budget, attrs.rung(trial), self.settings.rungs_below)
        monitor = self.objective.monitor(trial, family)
        monitor.progress = None  # the population's progress is shown as a whole
        monitor.horizon = budget  # a rung under the study's steps: the detectors judge it young
        start = pop.steps(slot)
        self.members.append(
            Member(
                trial, family, config, seed, pop, slot, monitor, target=max(target, start + 1), start=start
            )
        )
        self._show()

    def _start_state(self, trial: optuna.Trial) -> Any:
        """The member state a continued trial (promotion, PBT) starts from; None: fresh."""
        rel = attrs.start_state(trial)
        if rel is None:
            return None
        path = self.out_dir / rel
        if not path.is_file():
            # Its state was written on another machine: train the rung from scratch instead.
            trial.set_user_attr(TrialKey.START_STATE, None)
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def _budget(self, family: Any, config: Any) -> int:
        budget = self.settings.budget_for(family)
        if "steps" in budget:
            return int(budget["steps"])
        per_epoch = math.ceil(len(self.objective.data.train.x) / config.batch_size)
        return check_budget(None, budget["epochs"], per_epoch, batches_per_step=getattr(config, "d_steps", 1))

    def _interval(self, m: Member) -> int | None:
        """G steps between a member's evaluations: at the study's cadence, the steps a trial
        trained alone is evaluated at (every steps / (evals + 1)), so the pruner compares it at
        the same steps, and the detectors' patience, counted in evaluations, spans as many
        steps. At its rung's cadence a member of MNIST's 889-step rung 0 was scored every 148
        steps, and stagnation (3 evaluations without gain) stopped 8-9 of 20 fresh trials.
        A rung shorter than that is scored at its end only."""
        return m.monitor.schedule.interval(max(m.target, m.monitor.horizon or 0))

    def _next_stop(self, m: Member) -> int:
        """The member's next step of interest: its next evaluation or its end."""
        interval = self._interval(m)
        steps = m.steps
        if interval is None:
            return m.target
        return min(m.target, (steps // interval + 1) * interval)

    # -- one chunk of a population ------------------------------------------------------------

    def _advance(self, pop: Population) -> None:
        mine = [m for m in self.members if m.pop is pop and m.slot in pop.alive]
        if not mine:
            return
        before = {m.slot: m.steps for m in mine}
        # One log window at most, as the one-at-a-time loop calls its callback: the detectors
        # count windows, and the timeout and time caps are seen within one.
        chunk = max(1, min(pop.log_every, *(self._next_stop(m) - m.steps for m in mine)))
        signals = pop.step(chunk)
        due: list[Member] = []
        done: list[Member] = []
        for m in mine:
            s = signals.get(m.slot, {})
            m.signals = {k: v for k, v in s.items() if k not in ("steps", "diverged")}
            if s.get("diverged"):
                m.trial.set_user_attr(TrialKey.PRUNE_REASON, "diverged")
                m.trial.set_user_attr(TrialKey.STOP_REASON, "diverged")
                m.trial.set_user_attr(TrialKey.STEPS, m.steps)
                self._end(m, TrialState.PRUNED)
                continue
            capped = bool(self.settings.trial_seconds) and (
                time.perf_counter() - m.t0 >= (self.settings.trial_seconds or math.inf)
            )
            if m.steps >= m.target or capped:
                done.append(m)
                continue
            interval = self._interval(m)
            if interval and m.steps // interval > before[m.slot] // interval:
                due.append(m)
            else:
                self._watch(m, None)
        if due:
            self._evaluate(pop, due)
        if done:
            self._finish(pop, done)
        if self.pbt and due:  # after an evaluation: members are ranked on fresh values
            self._exploit(pop)
        self._show()

    def _watch(self, m: Member, scored: tuple[torch.Tensor, dict] | None) -> None:
        """The member's monitor on its last window (and evaluation): report, prune, detect."""
        if scored is not None:
            images, metrics = scored
            m.monitor.sample = lambda model, n, seed: images
            m.monitor.evaluator = _Scored(self.objective._progress_evaluator(m.monitor.schedule.n), metrics)
        try:
            m.monitor(m.steps, m.target, m.signals, m.slot if scored is not None else None)
        except optuna.TrialPruned:
            self._end(m, TrialState.PRUNED)
            return
        if scored is not None:
            metrics = scored[1]
            metric = m.monitor.metric
            value = m.signals.get("g_loss") if metric == "loss" else metrics.get(metric)
            m.value, m.evaluated_at = (None if value is None else float(value)), m.steps

    def _evaluate(self, pop: Population, due: list[Member]) -> None:
        n = due[0].monitor.schedule.n
        images = pop.samples(n, seed=EVAL_SEED)
        evaluator = self.objective._progress_evaluator(n)
        first = due[0].monitor  # only what the objective and the detectors read, as the monitor asks
        keys = {first.metric, *first.detectors.metrics()}
        metrics = evaluator.evaluate_many([images[m.slot] for m in due], keys=keys)
        for m, met in zip(due, metrics):
            self._watch(m, (images[m.slot], met))

    def _finish(self, pop: Population, done: list[Member]) -> None:
        """Score the members whose rung ended, in one batched pass, and tell their trials."""
        n = self.objective.n
        images = pop.samples(n, seed=EVAL_SEED)
        finals: dict[int, dict] = {}
        for keys, group in self._final_keys(done).items():
            metrics = self.objective.evaluator.evaluate_many([images[m.slot] for m in group], keys=keys)
            finals.update({m.slot: met for m, met in zip(group, metrics)})
        for m in done:
            full = finals[m.slot]
            result = TrainResult(
                model=pop.model(m.slot),
                config=m.config,
                losses=_losses(m.signals, m.family.main_loss),
                steps=m.steps,
                seconds=time.perf_counter() - m.t0,
                device=str(self.objective.device),
                seed=m.seed,
                stop_reason="budget" if m.steps >= m.target else "max_seconds",
            )
            if m.monitor.frames:  # the learning curve ends at the final step, at the same N
                at_n = full if m.monitor.schedule.n == n else None
                m.monitor.evaluator = _Scored(self.objective._progress_evaluator(m.monitor.schedule.n), at_n)
                try:
                    m.monitor.evaluate(m.steps, images=images[m.slot])
                except optuna.TrialPruned:
                    self._end(m, TrialState.PRUNED)
                    continue
            try:
                value = self.objective.score(
                    m.trial,
                    m.family,
                    m.config,
                    result,
                    m.monitor,
                    m.seed,
                    images=images[m.slot],
                    metrics=full,
                )
            except optuna.TrialPruned:
                self._end(m, TrialState.PRUNED)
                continue
            except GentuneError:
                self._end(m, TrialState.FAIL)
                raise
            except Exception as e:  # noqa: BLE001 - this trial fails; the others go on
                m.trial.set_user_attr(TrialKey.ERROR, describe_error(e))
                self._end(m, TrialState.FAIL)
                continue
            if self.settings.promotion:
                path = self.out_dir / state_path(m.trial.number)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(pop.state(m.slot), path)
            self._end(m, TrialState.COMPLETE, value=value)

    def _final_keys(self, done: list[Member]) -> dict[frozenset[str] | None, list[Member]]:
        """The members whose rung ended, by the metrics their final scoring computes: all
        (None) at the study's steps and above; under them (a promotion rung on the way) only
        what the objectives and the detectors read, at the same N: on MNIST at N = 10000 (2
        threads, quiet) FID alone took 1.1 s, all metrics 2.5 s (precision/recall's neighbours)."""
        groups: dict[frozenset[str] | None, list[Member]] = {}
        for m in done:
            keys = None
            if m.target < (m.monitor.horizon or 0):
                keys = frozenset({*self.settings.objectives, *m.monitor.detectors.metrics()})
            groups.setdefault(keys, []).append(m)
        return groups

    def _end(
        self, m: Member, state: TrialState, *, value: Any = None, requeue_as: bool | None = None
    ) -> None:
        """Tell `m`'s trial `state` and free its slot; `requeue_as` queues its parameters again
        (True: as a crash, counted towards the retry cap)."""
        m.pop.remove(m.slot)
        self.members.remove(m)
        if state == TrialState.PRUNED and attrs.prune_reason(m.trial) != "pbt_replaced":
            # A member stopped early speaks against its structure: no more fresh trials join it.
            self.admitted[id(m.pop)] = self.cohort
        if not any(other.pop is m.pop for other in self.members):
            self.pops.remove(m.pop)  # an empty population frees its memory
            self.admitted.pop(id(m.pop), None)
        frozen = self._told(m.trial, state, value)
        if requeue_as is not None and frozen is not None:
            requeue(self.study, frozen, crashed=requeue_as)

    def _told(self, trial: optuna.Trial, state: TrialState, value: Any = None) -> Any:
        try:
            frozen = self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            return None  # another worker found it lost (heartbeat) and re-queued it
        if self.progress is not None:
            _report_progress(self.progress, self.study, frozen)
        for callback in self.callbacks:  # as Study.optimize calls them (trackers: MLflow, W&B)
            callback(self.study, frozen)
        return frozen

    # -- PBT ----------------------------------------------------------------------------------

    def _exploit(self, pop: Population) -> None:
        """Replace the bottom quarter of `pop` by perturbed copies of its top quarter."""
        ready = [m for m in self.members if m.pop is pop and m.value is not None and m.evaluated_at > m.start]
        sign = 1.0 if self.minimize else -1.0
        ready.sort(key=lambda m: sign * float(m.value or 0.0))
        for loser, winner in pairs(ready):
            if self._past(0.0):
                return
            params, how = perturb(winner.trial.params, self.objective.space, self.rng, winner.accepts)
            step = winner.steps
            rel = f"trials/{winner.trial.number}/pbt-{step}.pt"
            path = self.out_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            state = dict(pop.state(winner.slot))
            # The copy draws its own batches and latents from here on, not its parent's.
            gen = torch.Generator(device=pop.device).manual_seed(self.rng.randrange(2**31))
            state["rng"] = gen.get_state()
            torch.save(state, path)
            loser.trial.set_user_attr(TrialKey.PRUNE_REASON, "pbt_replaced")
            loser.trial.set_user_attr(TrialKey.STEPS, loser.steps)
            self._end(loser, TrialState.PRUNED)
            with self.fill_lock:
                if self._move() != "run":
                    continue
                self.study.enqueue_trial(
                    params,
                    user_attrs={
                        TrialKey.PBT_PARENT: winner.trial.number,
                        TrialKey.GENERATION: attrs.generation(winner.trial) + 1,
                        TrialKey.PERTURBATION: how,
                        TrialKey.START_STATE: rel,
                        TrialKey.START_STEP: step,
                        TrialKey.TRAIN_SEED: winner.seed,
                    },
                )
                self._start(self._ask())

    # -- what others see ----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Heartbeats for every member: Optuna sends them only for trials run by `optimize`."""
        now = time.monotonic()
        if now - self.beat < heartbeat_interval():
            return
        self.beat = now
        storage = self.study._storage
        if isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval():
            for m in self.members:
                storage.record_heartbeat(m.trial._trial_id)

    def _show(self) -> None:
        if self.progress is not None:
            self.progress.population(len(self.members), sum(m.steps for m in self.members))


def cohort(k: int, n_trials: int | None) -> int:
    """How many fresh trials one structure takes in: COHORT x K, but no more than a
    1/STRUCTURES share of the study's configurations (at least 2), so that a 20-trial study
    tries ten structures or more. With a fifth, two 20-trial MNIST studies tried five or six:
    one ended at FID 1.18, the other (RMSprop, SGD and a width-64 Adam at lr near 1e-5, the rest
    diverged) at 34.8; with a cohort of 16, a bad first structure (RMSprop at batch 101)
    diverged in every member. On a CPU stacking gains little (1.3x at K = 8 on one thread), so
    the search is better served by more structures.

    >>> cohort(8, 20), cohort(8, 200), cohort(4, None), cohort(8, 4)
    (2, 16, 8, 2)
    """
    if n_trials is None:
        return COHORT * k
    return min(COHORT * k, max(2, n_trials // STRUCTURES))


def _losses(signals: dict, main: str) -> dict[str, float]:
    """A TrainResult's losses from a population's signals: g_loss -> g, d_loss -> d."""
    out = {k.removesuffix("_loss"): float(v) for k, v in signals.items() if k.endswith("_loss")}
    out.setdefault(main, float(signals.get(main, math.nan)))
    return out


def measure_k(
    family: Any, data: Any, config: Any, device: str, seconds: float = AUTO_SECONDS, max_k: int = AUTO_MAX
) -> int:
    """--population auto: the K whose population of `config` trains the most model-steps per
    second on `device`, doubling K from 1 (up to `max_k`) until a doubling gains less than 10%."""
    best_k, best_rate, k = 1, 0.0, 1
    while k <= max_k:
        pop = Population(family, data, capacity=k, device=device)
        for i in range(k):
            pop.add(config, seed=i)
        pop.step(2)  # warm-up: allocation, first kernels
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 4 or n < 4:
            pop.step(4)
            n += 4
        rate = k * n / (time.perf_counter() - t0)
        if rate < best_rate * AUTO_GAIN:
            break
        best_k, best_rate, k = k, rate, 2 * k
    return best_k


def population_size(study: optuna.Study, target: BuiltinTarget, data: Any, device: str) -> int:
    """K for this process: the study's number, or with "auto" the one measured here (stored as
    the study's `population_k`, each worker measuring its own device)."""
    asked = target.settings.population
    if isinstance(asked, int):
        k = asked
    else:
        family = target.family
        config = family.config_cls()  # the family's defaults: a typical member
        k = measure_k(family, data, config, device)
        if target.settings.strategy == "pbt":
            k = max(k, 4)
    study.set_user_attr(StudyKey.POPULATION_K, k)
    return k


def is_population_study(study: optuna.Study) -> bool:
    """Whether `study`'s settings ask for population training."""
    settings = stored_settings(study)
    return isinstance(settings, StudySettings) and settings.population is not None


def work_population(
    study: str,
    storage: str,
    *,
    data_dir: Any = None,
    data: Any = None,
    device: str = "auto",
    trials: int | None = None,
    timeout: float | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    worker_index: int | None = 0,
    threads: int | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    k: int | None = None,
) -> optuna.Study:
    """`gentune.study.runner.work` for a population study: the same arguments and checks; this
    process trains its own population of K members (`k`: this worker's share, else the
    study's K)."""
    if worker_index is None:
        worker_index = auto_worker_index()
    check_work_values(trials=trials, timeout=timeout, runs_dir=runs_dir, threads=threads)
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise GentuneError(
            "a worker's population must be an integer >= 1",
            value=k,
            fix="pass e.g. --population 4, or leave it out for the study's K",
        )
    if threads is not None:
        torch.set_num_threads(threads)
    target = target_of(open_or_create(study, storage), None, data)
    assert isinstance(target, BuiltinTarget)
    opened = open_or_create(study, storage, sampler=target.sampler(worker_index), pruner=target.pruner())
    if trials is None:
        trials = opened.user_attrs.get(StudyKey.TARGET_TRIALS)
    with progress_display(progress, trials, opened, target.metric) as bar:
        fn = target.objective(opened, runs_dir=Path(runs_dir), data_dir=data_dir, device=device, progress=bar)
        assert isinstance(fn, GenerativeObjective)
        if k is None:
            k = population_size(opened, target, fn.data, str(fn.device))
        else:
            opened.set_user_attr(StudyKey.POPULATION_K, k)
        PopulationRun(
            opened, fn, k=k, n_trials=trials, timeout=timeout, progress=bar, callbacks=callbacks
        ).run()
    return opened
