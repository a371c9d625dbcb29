"""One search = one study run to its target; the `Search` protocol every phase drives.

A phase (stages, narrowing, confirmation) hands candidates to a `Search`, as scikit-learn's
`BaseSearchCV._run_search(evaluate_candidates)` does, and never asks whether it runs a built-in
family (`BuiltinSearch`) or a user's own objective (`UserSearch`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import optuna

from gentune.data import load_dataset
from gentune.errors import GentuneError
from gentune.families import Family, default_space, get_family, portable_model
from gentune.generator import Generator, load
from gentune.loading import code_changed, source_sha256
from gentune.phases.noise import measure_noise
from gentune.phases.population import work_population
from gentune.progress import TrialProgress, print_banner
from gentune.search.space import SearchSpace, check_field, load_space_file
from gentune.search.strategies import make_sampler
from gentune.settings import (
    DATA_SEED,
    LOSS_WARNING,
    MULTI_OBJECTIVE_NOTE,
    RunOptions,
    SearchOptions,
    TuneRequest,
    UserSettings,
    auto_workers,
    check_directions,
    check_objective,
    check_study_name,
    cpu_threads,
    population_threads,
    resolve_settings,
    target_trials,
    tune_study_name,
    usable_cores,
)
from gentune.study.runner import TrialCallback, work
from gentune.study.storage import hide_password
from gentune.study.store import (
    builtin_settings,
    default_storage,
    enqueue_grid,
    existing_settings,
    open_or_create,
)
from gentune.study.summary import best_summary, write_json
from gentune.study.targets import BuiltinTarget
from gentune.study.workers import run_workers
from gentune.trial import attrs
from gentune.trial.attrs import StudyKey, TrialKey
from gentune.trial.user_objective import observed_space

Prepare = Callable[[optuna.Study], None]


@dataclass
class TuneResult:
    """A finished (or interrupted and resumable) study, where its outputs are, and its best trial.

    A multi-objective study has no one best trial: its `best` holds the Pareto front (key
    `front`) and a note saying so instead of `params` and `metrics`; `best_trials` is the
    front either way.
    """

    study: optuna.Study
    out_dir: Path
    best: dict[str, Any] | None  # best_summary(study): parameters, metrics, provenance

    @property
    def best_trials(self) -> list[dict[str, Any]]:
        """The Pareto front of a multi-objective study, best first by its first objective
        (each: trial, values by objective, params, metrics); [best] for one objective."""
        if self.best is None:
            return []
        return list(self.best["front"]) if "front" in self.best else [self.best]

    def best_model(self, trial: int | None = None, *, device: str = "auto") -> Generator:
        """The best trial's generator (or trial `trial`'s), as `gentune.load` gives it."""
        return load(self.study, trial, runs_dir=self.out_dir.parent, device=device)


class Search(Protocol):
    """What a phase needs of a search: run one study, and know its space and defaults."""

    name: str  # the base study's name; phases name theirs after it

    def run(
        self,
        *,
        study: str | None = None,
        space: SearchSpace | None = None,
        prepare: Prepare | None = None,
        strategy: str | None = None,
        trials: int | None = None,
        pruner: str | None = None,
        execute: bool = True,
    ) -> TuneResult:
        """Run (or resume) one study; None: the base search's own value. With `execute` False the
        study is only created (for `gentune worker` processes to run)."""
        ...

    def known_space(self) -> SearchSpace | None:
        """The space searched, or None when only running the objective shows it (a user's)."""
        ...

    def space_of(self, study: optuna.Study) -> SearchSpace:
        """The space a finished study of this search searched."""
        ...

    def defaults(self, screen: TuneResult | None) -> dict[str, Any]:
        """Values for the parameters a stage does not tune."""
        ...

    def rerun(self, candidate: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(params, user attributes) of a queued trial that re-runs `candidate` (confirm adds the seed)."""
        ...


def value_of(trial: optuna.trial.FrozenTrial) -> float:
    """A complete trial's value (complete trials always have one)."""
    assert trial.value is not None, trial.number
    return trial.value


def resolve_space(family: Family, space: str | Path | SearchSpace | None, kind: str = "image") -> SearchSpace:
    """The family's default space for `kind` data, narrowed or replaced by a user's file or
    SearchSpace. With --model auto the file names parameters as in the default ("vae.lr")."""
    default = default_space(family, kind)
    if space is None:
        return default
    if isinstance(space, SearchSpace):
        return space
    if family.name == "auto":
        return load_space_file(space, default, validate_value=check_field(set(default.params), dict))
    valid = set(family.config_cls.__dataclass_fields__)
    return load_space_file(space, default, validate_value=check_field(valid, family.config_cls.from_dict))


class BuiltinSearch:
    """Studies of a built-in (or a user's) model family, trained and scored by gentune."""

    def __init__(self, request: TuneRequest, run: RunOptions, callbacks: Sequence[TrialCallback] = ()):
        self.request = replace(request, model=portable_model(request.model))
        self.options = run
        self.callbacks = check_callbacks(callbacks, run)
        self.family = get_family(self.request.model, self.request.dataset.kind)
        self.objective = check_objective(
            self.family, self.request.dataset.kind, request.objective, self.request.dataset.name
        )

        def stored(name: str) -> dict | None:
            return existing_settings(run.storage or default_storage(name, Path(run.runs_dir)), name)

        name = run.study or tune_study_name(request, self.family, self.objective, stored)
        self.name = check_study_name(name)

    def known_space(self) -> SearchSpace:
        return resolve_space(self.family, self.request.search.space, self.request.dataset.kind)

    def space_of(self, study: optuna.Study) -> SearchSpace:
        return SearchSpace.from_dict(builtin_settings(study).space)

    def defaults(self, screen: TuneResult | None) -> dict[str, Any]:
        return self.family.config_cls().to_dict()

    def rerun(self, candidate: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        # gentune's trainer takes the whole config, so the re-run samples nothing.
        return {}, {TrialKey.FIXED_CONFIG: candidate["config"], TrialKey.FIXED_FAMILY: candidate["family"]}

    def run(
        self,
        *,
        study: str | None = None,
        space: SearchSpace | None = None,
        prepare: Prepare | None = None,
        strategy: str | None = None,
        trials: int | None = None,
        pruner: str | None = None,
        execute: bool = True,
    ) -> TuneResult:
        req, run = self.request, self.options
        search = replace(
            req.search,
            strategy=strategy or req.search.strategy,
            trials=req.search.trials if trials is None else trials,
            space=space if space is not None else req.search.space,
        )
        early = req.early_stop if pruner is None else replace(req.early_stop, pruner=pruner, patience=None)
        req = replace(req, search=search, early_stop=early)
        name = check_study_name(study or self.name, derived=True)
        resolved_space = resolve_space(self.family, search.space, req.dataset.kind)
        storage = run.storage or default_storage(name, Path(run.runs_dir))
        stored = existing_settings(storage, name)
        settings = resolve_settings(req, stored, self.family, resolved_space, device=_device_type(run.device))
        if "loss" in settings.objectives:
            warnings.warn(LOSS_WARNING, UserWarning, stacklevel=3)
        if len(settings.objectives) > 1 and stored is None:
            warnings.warn(MULTI_OBJECTIVE_NOTE, UserWarning, stacklevel=3)
        trials_target = target_trials(search.strategy, search.trials, resolved_space)
        # Callbacks are called in this process. A population study spawns workers as others do:
        # each trains its own population, one thread each (see settings.auto_workers).
        run = with_workers(run, trials_target, can_spawn=not self.callbacks)
        # Loaded before the study is made: data that cannot be used leaves no study behind.
        data_dir = req.dataset.path
        data = load_dataset(req.dataset.name, data_dir=data_dir, seed=DATA_SEED)
        opened = open_or_create(
            name,
            storage,
            settings=settings,
            sampler=make_sampler(search.strategy, resolved_space, search.seed),
            command=run.command,
        )
        pin_code(opened, req.model, "model family", trust=run.trust_changed_code)
        if len(settings.objectives) > 1 and not opened.metric_names:
            with warnings.catch_warnings():  # experimental in Optuna 5, and chosen on purpose
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                opened.set_metric_names(list(settings.objectives))  # the report and optuna-dashboard
        opened.set_user_attr(StudyKey.TARGET_TRIALS, trials_target)
        if search.strategy == "grid":
            enqueue_grid(opened, resolved_space.grid(), trials_target)
        if prepare is not None:
            prepare(opened)
        if (run.workers or 1) > 1 or not execute:
            # The parent trains the feature extractor (cached) and stores the floor once, so
            # the workers do not all do it at the same time.
            shown = TrialProgress(None) if run.progress else None  # the extractor's training
            BuiltinTarget(settings, data=data).prepare(opened, data_dir, run.device, shown)
        if execute:
            _execute(
                name,
                storage,
                trials_target,
                search.timeout,
                run,
                settings.objective,
                data_dir=data_dir,
                data=data,
                population=settings.population,
                callbacks=self.callbacks,
            )
            # Before finish: the report shows the band.
            out_dir = Path(run.runs_dir) / name
            measure_noise(opened, settings, run, out_dir=out_dir, data=data, data_dir=data_dir)
        return finish(opened, Path(run.runs_dir) / name, run.report and execute, storage)


class UserSearch:
    """Studies of a user's own Optuna objective, run under gentune's runner."""

    def __init__(
        self,
        objective: Callable[[optuna.Trial], float],
        *,
        study: str,
        direction: str,
        search: SearchOptions,
        run: RunOptions,
        objective_spec: str | None = None,
        callbacks: Sequence[TrialCallback] = (),
    ):
        direction = check_directions(direction)
        self.objective, self.name, self.direction = objective, check_study_name(study), direction
        self.search, self.options, self.spec = search, run, objective_spec
        self.callbacks = check_callbacks(callbacks, run)

    def known_space(self) -> None:
        return None

    def space_of(self, study: optuna.Study) -> SearchSpace:
        return observed_space(study)

    def defaults(self, screen: TuneResult | None) -> dict[str, Any]:
        return screen.best["params"] if screen is not None and screen.best else {}

    def rerun(self, candidate: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        # The objective gets the parameters back from its own suggest calls.
        return candidate["params"], {}

    def run(
        self,
        *,
        study: str | None = None,
        space: SearchSpace | None = None,
        prepare: Prepare | None = None,
        strategy: str | None = None,
        trials: int | None = None,
        pruner: str | None = None,
        execute: bool = True,
    ) -> TuneResult:
        del pruner  # a user's objective does its own pruning, if any
        s, run = self.search, self.options
        name = check_study_name(study or self.name, derived=True)
        strategy = strategy or s.strategy
        file_space = s.space
        base_space = (
            file_space
            if isinstance(file_space, SearchSpace)
            else load_space_file(file_space, SearchSpace())
            if file_space
            else SearchSpace()
        )
        settings = UserSettings(
            strategy=strategy,
            direction=self.direction,
            seed=s.seed,
            space=base_space.to_dict(),
            objective_fn=self.spec,
        )
        trials_target = target_trials(strategy, s.trials if trials is None else trials, base_space)
        # A user's objective may not bear running in several processes at once unasked.
        run = with_workers(run, trials_target, can_spawn=False)
        storage = run.storage or default_storage(name, Path(run.runs_dir))
        opened = open_or_create(
            name,
            storage,
            settings=settings,
            sampler=make_sampler(strategy, base_space, s.seed),
            command=run.command,
        )
        if self.spec:
            pin_code(opened, self.spec, "objective", trust=run.trust_changed_code)
        opened.set_user_attr(StudyKey.TARGET_TRIALS, trials_target)
        if strategy == "grid":
            enqueue_grid(opened, base_space.grid(), trials_target)
        if space is not None:  # a phase's space, applied to the objective's suggest calls
            opened.set_user_attr(StudyKey.PHASE_SPACE, space.to_dict())
        if prepare is not None:
            prepare(opened)
        if ((run.workers or 1) > 1 or not execute) and not self.spec:
            raise GentuneError(
                "worker processes need the objective as FILE.py:FUNC, to load it in each process",
                value=run.workers,
                fix="pass objective_spec, or workers=1",
            )
        if execute:
            _execute(
                name,
                storage,
                trials_target,
                s.timeout,
                run,
                "value",
                objective=self.objective,
                callbacks=self.callbacks,
            )
        return finish(opened, Path(run.runs_dir) / name, run.report and execute, storage)


def pin_code(study: optuna.Study, spec: str, what: str, *, trust: bool) -> None:
    """Store the sha256 of the user's FILE.py that `spec` names in a new study, so that workers
    run only that code; on an existing study, refuse a file whose hash differs unless `trust`
    (then store the new one). Nothing for a built-in family or a module:NAME spec."""
    digest = source_sha256(spec)
    if digest is None:
        return
    stored = attrs.code_sha256(study)
    if stored is not None and stored != digest and not trust:
        raise code_changed(spec.rpartition(":")[0], what, stored, digest)
    if stored != digest:
        study.set_user_attr(StudyKey.CODE_SHA256, digest)


def _execute(
    name: str,
    storage: str,
    trials: int | None,
    timeout: float | None,
    run: RunOptions,
    metric: str,
    *,
    data_dir: Any = None,
    data: Any = None,
    objective: Callable[[optuna.Trial], float] | None = None,
    population: int | str | None = None,
    callbacks: Sequence[TrialCallback] = (),
) -> None:
    """Run the study's trials here, or in `run.workers` processes that share its storage;
    `population` (the study's K, or "auto"): K at a time, shared out among the worker
    processes (gentune.phases.population); `callbacks`: Optuna's, after each finished trial
    (gentune.study.runner.Runner)."""
    if run.progress:
        print_banner(name, hide_password(storage), f"{Path(run.runs_dir) / name}/", _resume_hint(run))
    if run.workers is not None and run.workers > 1:
        run_workers(
            name,
            storage,
            run.workers,
            trials=trials,
            timeout=timeout,
            data_dir=data_dir,
            device=run.device,
            gpus=run.gpus,
            threads=run.threads,
            runs_dir=run.runs_dir,
            progress=run.progress,
            metric=metric,
            population=-(-population // run.workers) if isinstance(population, int) else None,
        )
    else:
        # A population study's trials train together in this process; the rest one at a time.
        runner = work_population if population is not None else partial(work, objective=objective)
        runner(
            name,
            storage,
            data_dir=data_dir,
            data=data,
            device=run.device,
            trials=trials,
            timeout=timeout,
            runs_dir=run.runs_dir,
            progress=run.progress,
            threads=run_threads(run, population=population is not None),
            callbacks=callbacks,
        )


def _resume_hint(run: RunOptions) -> str:
    """How to go on with a study after a stop: the command that ran it (the CLI's), or the call."""
    if run.command:
        return f"{run.command}   (the same command continues the study)"
    return "call the same function with the same arguments again: the study continues"


def run_threads(run: RunOptions, population: bool = False) -> int | None:
    """CPU threads of a run in this process: the given ones, else on the CPU settings.cpu_threads
    (a `population`: settings.population_threads) of this machine's cores and load (None on a
    GPU: torch's own choice)."""
    if run.threads is not None or run.device not in ("auto", "cpu"):
        return run.threads
    import torch

    if run.device == "auto" and torch.cuda.is_available():
        return None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if population:
        from gentune.device import busy_cores

        busy = busy_cores()
        return population_threads(usable_cores(), load if busy is None else busy)
    return cpu_threads(os.cpu_count() or 1, load)


def check_callbacks(callbacks: Sequence[TrialCallback], run: RunOptions) -> list[TrialCallback]:
    """`callbacks` as a list, each checked to be callable; refused with worker processes, which
    run the trials where this process cannot call them."""
    found = list(callbacks or ())
    for callback in found:
        if not callable(callback):
            raise GentuneError(
                "each of callbacks= must be callable as callback(study, frozen_trial)",
                value=repr(callback),
                fix="pass functions or objects such as optuna_integration.MLflowCallback(...)",
            )
    if found and (run.workers or 1) > 1:
        raise GentuneError(
            "callbacks= are called in this process, and workers > 1 run the trials in other processes",
            value=run.workers,
            fix="pass workers=1 with callbacks=, or follow the study from its storage "
            "(gentune dashboard STUDY)",
        )
    return found


def with_workers(run: RunOptions, trials: int | None, *, can_spawn: bool) -> RunOptions:
    """`run` with its worker count settled: the given one, else on the CPU one process per core
    (settings.auto_workers) where its trials can run in other processes, else 1."""
    if run.workers is not None:
        return run
    workers = 1
    if can_spawn and _device_type(run.device) == "cpu":
        workers = auto_workers(usable_cores(), trials)
    return replace(run, workers=workers)


def _device_type(device: str) -> str:
    """The kind of device a run on `device` trains on: cuda or cpu (auto: CUDA when present)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def finish(study: optuna.Study, out_dir: Path, report: bool, storage: str) -> TuneResult:
    """best.json and (with `report`) report.html beside the study; the result."""
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_summary(study)
    if best is not None:
        write_json(out_dir / "best.json", best)
    if report:
        write_study_report(storage, study.study_name, out_dir / "report.html")
    return TuneResult(study, out_dir, best)


def write_study_report(storage: str, study_name: str, path: Path) -> Path | None:
    """Write the HTML report beside the study's outputs; a report failure never loses a study."""
    from gentune.report import write_report  # plotting is an optional extra: imported when used

    try:
        write_report(storage, study_name, path)
    except Exception as e:  # noqa: BLE001 - the study is safe; say what went wrong and go on
        warnings.warn(f"the report could not be written: {e!r}", stacklevel=2)
        return None
    return path
