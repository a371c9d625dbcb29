"""Every default and every resolution of a study's settings, in one place.

A request (what the user asked: the API's option objects, or the CLI's flags, with None for
"not given") and the settings an existing study stored go in; the `StudySettings` the study
runs with come out (`resolve_settings`). Nothing else in gentune picks a default for these
fields, fills in a budget or checks an objective, so a value travels down the layers once:
drawn here, stored in the study, read by the trial.

>>> req = TuneRequest(model="gan-mlp", dataset=DatasetRef("digits"))
>>> from gentune.families import get_family
>>> family = get_family("gan-mlp")
>>> s = resolve_settings(req, None, family, family.default_space())
>>> (s.objective, s.strategy, s.pruner, s.evals, s.budget_for(family))
('fid', 'tpe', 'median', 5, {'steps': 1000})
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gentune.data import dataset_kind
from gentune.errors import GentuneError, StudyError, unknown_choice
from gentune.families import OBJECTIVES as FAMILY_OBJECTIVES
from gentune.families import check_data
from gentune.metrics.features import FEATURE_DIM
from gentune.search.pruners import PRUNERS, default_pruner, make_pruner
from gentune.search.space import SearchSpace
from gentune.search.strategies import DEFAULT_STRATEGY, STRATEGIES, grid_size
from gentune.trial.detectors import DetectorConfig
from gentune.trial.monitor import Schedule
from gentune.version import __version__

if TYPE_CHECKING:
    import optuna

    from gentune.families import Family

# Every built-in objective (each family says which apply to it) is minimised; a user's
# objective names its direction.
OBJECTIVES = {name: "minimize" for name in FAMILY_OBJECTIVES}
DIRECTIONS = ("minimize", "maximize")
# What a multi-objective study (--objective fid,seconds) may combine, with each one's direction:
# the objectives above, precision and recall (images), and a trial's training time in seconds.
OBJECTIVE_DIRECTIONS = {**OBJECTIVES, "precision": "maximize", "recall": "maximize", "seconds": "minimize"}
# Optuna's Pareto plot draws 2 or 3 objectives, and a front over more is too large to read.
MAX_OBJECTIVES = 3
# Objectives that a useless model wins when they rank trials alone, so they only come in a
# combination with one that measures quality by itself (or precision with recall).
PAIRED_ONLY = {
    "seconds": "the fastest trial is the one that trains least",
    "precision": "a generator that draws one realistic image over and over scores full precision",
    "recall": "samples spread over everything, noise included, score full recall",
}
MULTI_OBJECTIVE_NOTE = (
    "a multi-objective study prunes no trial (Optuna's pruners compare one value per step), so "
    "each trial trains its whole budget unless a failure detector stops it"
)
LOSS_WARNING = (
    "--objective loss ranks trials by the final generator loss, which does not measure "
    "sample quality: on the tutorial's GAN the lowest-loss configurations are often "
    "mode-collapsed. Use --objective fid (the default) to tune what the model generates."
)
# Training budget per trial (generator steps) of a family that declares none for the dataset;
# measured on 2 CPU cores so that the default jobs fit their time (see README).
DEFAULT_STEPS = {"digits": 3000, "mnist": 8000}
FALLBACK_STEPS = 3000
DEFAULT_TRIALS = 20  # finished trials a study should hold when the user names no number
DEFAULT_EVALS = 5  # evaluations during training before the final one: 6 points on the curve
DATA_SEED = 0  # splits are fixed by this seed, so every study of a dataset shares them
# PBT replaces the bottom quarter of a population with copies of the top quarter, so it needs
# at least 4 members to have a top and a bottom.
PBT_MIN_POPULATION = 4
# A new promotion study's fresh trials train its steps / 3**2 (gentune.phases.promotion): a
# configuration earns the one-at-a-time budget by beating the others at a ninth and a third.
RUNGS_BELOW = 2
ETA = 3  # promotion: the top third of a rung goes on, and trains 3x as long in all


def rung_steps(steps: int, rung: int, below: int = 0) -> int:
    """The G steps a promotion trial of `rung` trains to, in all (from scratch), in a ladder
    whose rung `below` trains the study's `steps` (gentune.phases.promotion).

    >>> [rung_steps(3000, r) for r in range(3)]
    [3000, 9000, 27000]
    >>> [rung_steps(8000, r, below=2) for r in range(4)]
    [889, 2667, 8000, 24000]
    """
    return max(1, round(steps * float(ETA) ** (rung - below)))


# NumPy's generators take seeds below 2**32, and a worker draws from the study seed plus its
# index (up to about 1e6), so the study seed stays below 2**31.
MAX_SEED = 2**31 - 1
# A study name is a folder under runs/ and a file name, so it may only be a plain name: no path
# separator, no "." or "..", nothing a shell or another filesystem reads differently.
STUDY_NAME_MAX = 100
# The names phases derive add suffixes to a name (<study>-screen, -stage2, -narrow, -confirm,
# chained: <study>-stage3-narrow-confirm); they get this much room beyond STUDY_NAME_MAX.
DERIVED_NAME_ROOM = 40
STUDY_NAME_RULE = (
    f"a study name is 1-{STUDY_NAME_MAX} characters: letters a-z A-Z, digits, '-', '_' and '.', "
    "not starting with '.' or '-' (it names the folder runs/<study>)"
)
_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]")


def objective_names(objective: str) -> tuple[str, ...]:
    """The objectives an --objective value names, in order: one, or several joined by commas.

    >>> objective_names("fid, seconds"), objective_names("fid")
    (('fid', 'seconds'), ('fid',))
    """
    return tuple(part.strip() for part in objective.split(","))


def default_objective(kind: str) -> str:
    """The objective of a study that names none: validation NLL on text, FID on images."""
    return "nll" if kind == "text" else "fid"


@dataclass(frozen=True)
class DatasetRef:
    """A dataset by name, with the user's own file or folder for `files` and `text`.

    Its `label` is what a study stores ("digits", "files:<folder>", "text:<file>"), so two
    studies of different folders never share a default name.

    >>> DatasetRef("files", "/data/faces").label
    'files:faces'
    >>> DatasetRef.parse("files:faces").name
    'files'
    """

    name: str = "digits"
    path: str | None = None  # the user's folder (files, mnist) or text file (text)

    @property
    def label(self) -> str:
        if self.name in ("files", "text") and self.path is not None:
            return f"{self.name}:{Path(str(self.path)).name}"
        return self.name

    @property
    def kind(self) -> str:
        return dataset_kind(self.name)

    @classmethod
    def parse(cls, label: str) -> DatasetRef:
        """The reference a stored label names; the path itself is not stored (only its name)."""
        name, _, _ = label.partition(":")
        return cls(name)


@dataclass(frozen=True)
class Budget:
    """Training per trial: `steps` or `epochs` (None for both: the family's default for the
    dataset), and at most `trial_seconds` of training time."""

    steps: int | None = None  # optimiser updates (G updates for the GANs)
    epochs: float | None = None  # or passes over the training data
    trial_seconds: float | None = None  # stop training after this long and score what it has

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise GentuneError(
                "give the training budget as steps or as epochs, not both",
                value={"steps": self.steps, "epochs": self.epochs},
                fix="drop one of them",
            )
        if self.steps is not None and (not _is_int(self.steps) or self.steps < 1):
            raise GentuneError(
                "--steps must be an integer >= 1", value=self.steps, fix="pass e.g. --steps 3000"
            )
        if self.epochs is not None and not _positive(self.epochs):
            raise GentuneError(
                "--epochs must be a finite number > 0", value=self.epochs, fix="pass e.g. --epochs 5"
            )
        if self.trial_seconds is not None and not _positive(self.trial_seconds):
            raise GentuneError(
                "--trial-seconds must be a positive number of seconds",
                value=self.trial_seconds,
                fix="pass e.g. --trial-seconds 300, or leave it out for no time cap",
            )


@dataclass(frozen=True)
class SearchOptions:
    """How configurations are drawn, and how many."""

    strategy: str = DEFAULT_STRATEGY  # grid, random, qmc, tpe or gp
    trials: int | None = None  # finished trials the study should hold (None: 20; grid: its size)
    timeout: float | None = None  # wall-clock limit of this run, seconds
    space: str | Path | SearchSpace | None = None  # a YAML/TOML file or a SearchSpace
    seed: int = 0  # the sampler's and training's seed
    # Members trained at once in one process (gentune.phases.population): K, "auto" (measured),
    # or "off"/0; None: auto with CUDA for a family that supports it, else off.
    population: int | str | None = None
    # Continue a trial in the top third of its rung from its state (asynchronous successive
    # halving); None: on with a population (but not with --strategy pbt).
    promotion: bool | None = None

    def __post_init__(self) -> None:
        check_count("--trials", self.trials, example=20)
        check_seconds("--timeout", self.timeout, example=3600)
        check_seed(self.seed)
        check_population(self.population)


@dataclass(frozen=True)
class EarlyStop:
    """How trials are watched and stopped early; None: the strategy's default, or what an
    existing study stored."""

    pruner: str | None = None  # none, median, percentile, halving or hyperband
    patience: int | None = None  # prune only after this many flat evaluations
    evals: int | None = None  # evaluations during training before the final one
    eval_every: int | None = None  # or every this many steps
    eval_samples: int | None = None  # N of those evaluations
    detectors: Any = None  # DetectorConfig, its dict, True/"on", False/"off"
    prune_overfitting: bool = False  # prune a trial whose validation loss rises while training falls

    def __post_init__(self) -> None:
        check_count("--patience", self.patience, example=3)
        check_count("--evals", self.evals, minimum=0, example=5)
        check_count("--eval-every", self.eval_every, example=500)
        check_sample_count("--eval-samples", self.eval_samples)


@dataclass(frozen=True)
class RunOptions:
    """Where a study lives and how this run executes it."""

    study: str | None = None  # name (default: from model, dataset, strategy, objective)
    storage: str | None = None  # Optuna storage URL (default: sqlite:///RUNS/STUDY/study.db)
    runs_dir: str | Path = "runs"
    device: str = "auto"
    # Processes sharing the study on this machine; None: auto_workers on the CPU where the
    # trials can run in other processes (gentune's own families), else 1.
    workers: int | None = None
    gpus: list[int] | None = None
    threads: int | None = None  # torch threads per process
    report: bool = True  # write runs/STUDY/report.html at the end
    progress: bool = True
    command: str | None = None  # the command line, kept with a new study
    # Run a user's FILE.py (--objective-fn, --model FILE.py:Class) whose content changed since
    # the study stored its hash; the study then stores the new hash.
    trust_changed_code: bool = False
    # Latent seeds the best trial is re-scored under after a search (gentune.phases.noise): the
    # band its value could have fallen in. 0 skips it; it is sampling and scoring, no training.
    noise_seeds: int = 5

    def __post_init__(self) -> None:
        if self.study is not None:
            check_study_name(self.study)
        check_count("--noise-seeds", self.noise_seeds, minimum=0, example=5)
        check_count("--workers", self.workers, example=2)
        check_count("--threads", self.threads, example=1)
        for gpu in self.gpus or []:
            check_count("--gpus", gpu, minimum=0, example=0)


@dataclass(frozen=True)
class Phases:
    """Tuning in phases after (or instead of) one search: see gentune.phases."""

    stages: str | None = None  # auto, a number of stages, or groups "lr,batch_size:beta1"
    screen_trials: int | None = None
    narrow: bool = False
    narrow_top: int | None = None
    narrow_trials: int | None = None
    confirm: int | None = None  # re-run the top K under extra seeds
    confirm_seeds: int | None = None

    def __post_init__(self) -> None:
        check_count("--screen-trials", self.screen_trials, example=10)
        check_count("--narrow-top", self.narrow_top, example=5)
        check_count("--narrow-trials", self.narrow_trials, example=20)
        check_count("--confirm", self.confirm, minimum=0, example=3)
        check_count("--confirm-seeds", self.confirm_seeds, example=2)


@dataclass(frozen=True)
class TuneRequest:
    """What a user asked of a built-in family; None: not given."""

    model: str = "gan-mlp"
    dataset: DatasetRef = field(default_factory=DatasetRef)
    objective: str | None = None
    n_eval: int | None = None  # N of the sample metric (None: the evaluator's default)
    budget: Budget = field(default_factory=Budget)
    search: SearchOptions = field(default_factory=SearchOptions)
    early_stop: EarlyStop = field(default_factory=EarlyStop)

    def __post_init__(self) -> None:
        check_sample_count("--n-eval", self.n_eval)


@dataclass(frozen=True)
class StudySettings:
    """What defines a study of a built-in family; stored in it and checked when it is resumed."""

    model: str = "gan-mlp"
    dataset: str = "digits"  # DatasetRef.label
    strategy: str = DEFAULT_STRATEGY
    objective: str = "fid"
    steps: int | None = None  # per trial; None with epochs None: budget_for's default
    epochs: float | None = None
    trial_seconds: float | None = None  # and at most this much training time per trial
    n_eval: int | None = None  # N of the sample metric; None: the evaluator's default
    seed: int = 0
    space: dict = field(default_factory=dict)  # SearchSpace.to_dict()
    # These defaults are "off", which is how studies created before these fields ran;
    # resolve_settings turns them on for a new study.
    pruner: str = "none"
    patience: int | None = None
    evals: int = 0
    eval_every: int | None = None
    eval_samples: int | None = None  # None: min(N of the metric, 1000)
    detectors: dict | None = None  # DetectorConfig.to_dict(); None: no detector
    prune_overfitting: bool = False
    population: int | str | None = None  # K or "auto"; None: one trial at a time
    promotion: bool = False  # continue the top third of each rung (needs a population)
    # Promotion rungs under the study's steps: fresh trials train steps / 3**rungs_below
    # (gentune.phases.promotion). 0 in studies made before it, whose rung 0 is the steps.
    rungs_below: int = 0

    @property
    def objectives(self) -> tuple[str, ...]:
        """The study's objectives: one, or those of a multi-objective study in order."""
        return objective_names(self.objective)

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(OBJECTIVE_DIRECTIONS.get(o, "minimize") for o in self.objectives)

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def watched(self) -> tuple[str, str]:
        """(objective, direction) measured during training for the detectors (and the pruner
        of a single objective): the first objective that is not the training time."""
        return next((o, d) for o, d in zip(self.objectives, self.directions) if o != "seconds")

    @property
    def dataset_ref(self) -> DatasetRef:
        return DatasetRef.parse(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        many = {"directions": list(self.directions)} if len(self.objectives) > 1 else {}
        return {"version": __version__, **asdict(self), "direction": self.direction, **many}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def budget_for(self, family: Family | None = None) -> dict[str, Any]:
        """The training budget of one trial of `family`: the study's steps or epochs, else (a
        study that stored none) the family's unstored or default steps for the dataset, else
        DEFAULT_STEPS."""
        if self.epochs is not None:
            return {"epochs": self.epochs}
        if self.steps is not None:
            return {"steps": self.steps}
        name = self.dataset_ref.name
        own = None if family is None else family.unstored_steps.get(name) or family.default_steps.get(name)
        return {"steps": own or DEFAULT_STEPS.get(name, FALLBACK_STEPS)}

    def pruner_for(self, family: Family | None = None) -> optuna.pruners.BasePruner:
        """The study's pruner, its rungs on the evaluation steps of `family`'s budget."""
        total = self.budget_for(family).get("steps")
        first = (
            Schedule(evals=self.evals, every=self.eval_every).interval(total) if total else self.eval_every
        )
        return make_pruner(
            self.pruner, first_step=first or "auto", total_steps=total or "auto", patience=self.patience
        )


@dataclass(frozen=True)
class UserSettings:
    """What defines a study of a user's own objective (`objective_fn`, FILE.py:FUNC)."""

    strategy: str = DEFAULT_STRATEGY
    direction: str = "minimize"
    seed: int = 0
    space: dict = field(default_factory=dict)
    # Stored so that workers load the same objective. Not compared on resume: a checkout that
    # moved gives the same file another path.
    objective_fn: str | None = field(default=None, compare=False)

    @property
    def directions(self) -> tuple[str, ...]:
        """One direction, or a multi-objective study's, given as "minimize,maximize"."""
        return objective_names(self.direction)

    def to_dict(self) -> dict[str, Any]:
        # "model": "user" marks these studies in storage (docs/storage.md), as it always has.
        return {"model": "user", "objective": "user", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def is_user_study(stored: dict | None) -> bool:
    """Whether stored settings are those of a user's objective."""
    return stored is not None and stored.get("model") == "user"


def check_objective(family: Family, kind: str, objective: str | None, dataset: str = "") -> str:
    """The objective of a study of `family` on `kind` data, checked; None: the default. Several
    joined by commas make a multi-objective study (`check_objectives`)."""
    check_data(family, kind, dataset)
    objective = objective or default_objective(kind)
    if "," in objective:
        return ",".join(check_objectives(family, kind, objective))
    if objective in PAIRED_ONLY:
        raise GentuneError(
            f"--objective {objective} cannot rank trials alone: {PAIRED_ONLY[objective]}",
            value=objective,
            fix="combine it with a quality objective, e.g. --objective fid,seconds or "
            "--objective precision,recall",
        )
    if objective not in OBJECTIVES:
        raise unknown_choice("objective", objective, OBJECTIVES)
    if objective not in family.objectives():
        raise GentuneError(
            f"--objective {objective} does not apply to --model {family.name} on {kind} data",
            value=objective,
            fix=f"use one of: {', '.join(family.objectives())}",
        )
    return objective


def check_objectives(family: Family, kind: str, objective: str) -> tuple[str, ...]:
    """The objectives of a multi-objective --objective value (names joined by commas), checked:
    2 to MAX_OBJECTIVES distinct names that apply to `family` on `kind` data, one of which
    measures quality by itself (precision and recall only do so together)."""
    names = objective_names(objective)
    example = "pass e.g. --objective fid,seconds"
    if "" in names:
        raise GentuneError("--objective has an empty name between commas", value=objective, fix=example)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise GentuneError(
            f"--objective names {', '.join(repeated)} twice; each objective counts once",
            value=objective,
            fix=f"drop the repeat: --objective {','.join(dict.fromkeys(names))}",
        )
    if len(names) > MAX_OBJECTIVES:
        raise GentuneError(
            f"--objective names {len(names)} objectives; a study takes at most {MAX_OBJECTIVES} "
            "(its Pareto front is drawn and read in 2 or 3)",
            value=objective,
            fix=f"keep the {MAX_OBJECTIVES} that matter most",
        )
    for name in names:
        if name not in OBJECTIVE_DIRECTIONS:
            raise unknown_choice("objective", name, OBJECTIVE_DIRECTIONS)
    # Sample metrics score images only (a family of both kinds lists them for its images).
    own = tuple(o for o in family.objectives() if kind == "image" or o in ("nll", "loss"))
    sample_metrics = ("precision", "recall") if "fid" in own else ()
    applies = (*own, *sample_metrics, "seconds")
    for name in names:
        if name not in applies:
            raise GentuneError(
                f"--objective {name} does not apply to --model {family.name} on {kind} data",
                value=objective,
                fix=f"combine two or three of: {', '.join(applies)}",
            )
    alone = [n for n in names if n not in PAIRED_ONLY]
    if not alone and not {"precision", "recall"} <= set(names):
        raise GentuneError(
            f"--objective {objective} holds no objective that measures quality by itself, so "
            f"a useless model sits on its Pareto front ({PAIRED_ONLY[names[0]]})",
            value=objective,
            fix=f"add one of: {', '.join(n for n in applies if n not in PAIRED_ONLY)}, or use "
            "precision and recall together",
        )
    return names


def check_phases(objective: str, phases: Phases) -> None:
    """Refuse the phases that need one best trial (stages, narrowing, confirmation) on a
    multi-objective study, whose result is a Pareto front: which trial would they keep?"""
    flags = (("--stages", phases.stages), ("--narrow", phases.narrow), ("--confirm", phases.confirm))
    asked = [flag for flag, on in flags if on]
    if asked and len(objective_names(objective)) > 1:
        raise GentuneError(
            f"{', '.join(asked)} {'builds' if len(asked) == 1 else 'build'} on one best trial, and a "
            "multi-objective study "
            f"({objective}) has a Pareto front instead",
            value=objective,
            fix="run the phases with a single --objective (e.g. fid), or pick a trial from the "
            "front that gentune best prints",
        )


def check_directions(direction: str) -> str:
    """The direction(s) of a user's objective: minimize or maximize, or up to MAX_OBJECTIVES of
    them joined by commas for an objective that returns one value per objective.

    >>> check_directions("minimize, maximize")
    'minimize,maximize'
    """
    names = objective_names(str(direction))
    if any(d not in DIRECTIONS for d in names) or len(names) > MAX_OBJECTIVES:
        raise GentuneError(
            f"direction must be minimize or maximize, or up to {MAX_OBJECTIVES} of them joined by "
            "commas for an objective that returns one value per objective",
            value=direction,
            fix="pass --direction minimize, or e.g. --direction minimize,maximize",
        )
    return ",".join(names)


def check_multi_objective_pruning(early_stop: EarlyStop, objective: str) -> None:
    """A pruner or patience asked for a multi-objective study: Optuna cannot prune one."""
    asked = {
        k: v
        for k, v in (("pruner", early_stop.pruner), ("patience", early_stop.patience))
        if v is not None and v != "none"
    }
    if asked:
        raise GentuneError(
            f"--{' and --'.join(asked)} cannot apply to a multi-objective study (--objective "
            f"{objective}): Optuna's pruners compare one value per step",
            value=asked,
            fix=f"drop --{' and --'.join(asked)} (failure detectors still stop hopeless trials), or "
            "tune one objective",
        )


def target_trials(strategy: str, trials: int | None, space: SearchSpace) -> int | None:
    """Finished trials a study should hold: the given number (a grid: at most its size), else
    DEFAULT_TRIALS (a grid: its size)."""
    if trials is not None and (not _is_int(trials) or trials < 1):
        raise GentuneError("--trials must be an integer >= 1", value=trials, fix="pass e.g. --trials 20")
    if strategy == "grid":
        size = grid_size(space)
        return size if trials is None else min(trials, size)
    return DEFAULT_TRIALS if trials is None else trials


def resolve_early_stop(
    strategy: str, given: EarlyStop, stored: dict | None, family_eval_samples: int | None
) -> dict:
    """The StudySettings fields that decide how a trial's compute is spent.

    A field left None takes the value an existing study stored (`stored`, its settings dict),
    so that rerunning a command resumes the study whatever the defaults; for a new study it
    takes the default: the strategy's pruner, DEFAULT_EVALS evaluations of the family's
    `eval_samples` (None: min(N, 1000)), every detector.
    """
    if given.pruner is not None and given.pruner not in PRUNERS:
        raise unknown_choice("pruner", given.pruner, PRUNERS)
    detectors = given.detectors
    if detectors in (True, "on"):
        detectors = DetectorConfig()
    elif detectors in (False, "off"):
        detectors = DetectorConfig().only([])
    elif isinstance(detectors, dict):
        detectors = DetectorConfig.from_dict(detectors)
    old = stored is not None
    prior = stored or {}

    def pick(name: str, value: Any, new_default: Any) -> Any:
        if value is not None:
            return value
        return prior.get(name) if old else new_default

    return {
        "pruner": pick("pruner", given.pruner, default_pruner(strategy)) or "none",
        "patience": pick("patience", given.patience, None),
        "evals": pick("evals", given.evals, DEFAULT_EVALS) or 0,
        "eval_every": pick("eval_every", given.eval_every, None),
        "eval_samples": pick("eval_samples", given.eval_samples, family_eval_samples),
        "detectors": pick(
            "detectors", detectors.to_dict() if detectors is not None else None, DetectorConfig().to_dict()
        ),
    }


def resolve_settings(
    request: TuneRequest,
    stored: dict | None,
    family: Family,
    space: SearchSpace,
    *,
    device: str = "cpu",
) -> StudySettings:
    """The settings a study of `request` runs with. Pure: no file, storage or network.

    `stored` is the settings dict of the existing study of that name (None: a new study),
    `family` the family `request.model` names, `space` the resolved search space, `device`
    the device this run trains on (resolved: "cpu", "cuda:0"), which decides whether a new
    study trains populations by default.
    """
    kind = request.dataset.kind
    objective = check_objective(family, kind, request.objective, request.dataset.name)
    strategy = request.search.strategy
    if strategy not in STRATEGIES:
        raise unknown_choice("strategy", strategy, STRATEGIES)
    budget = request.budget
    steps = budget.steps
    if steps is None and budget.epochs is None:
        # A resumed study keeps the steps it stored (None: budget_for's default for it), so a
        # changed default leaves it as it was; a new one stores the family's default.
        steps = stored.get("steps") if stored is not None else family.default_steps.get(request.dataset.name)
    settings = StudySettings(
        model=request.model,
        dataset=request.dataset.label,
        strategy=strategy,
        objective=objective,
        steps=steps,
        epochs=budget.epochs,
        trial_seconds=budget.trial_seconds,
        n_eval=request.n_eval,
        seed=request.search.seed,
        space=space.to_dict(),
        prune_overfitting=request.early_stop.prune_overfitting,
    )
    early = resolve_early_stop(strategy, request.early_stop, stored, family.eval_samples)
    if len(settings.objectives) > 1:
        check_multi_objective_pruning(request.early_stop, objective)
        early.update(pruner="none", patience=None)
    if strategy == "pbt" and request.early_stop.pruner is None and stored is None:
        early["pruner"] = "none"  # PBT replaces its losers itself
    return replace(settings, **early, **resolve_population(request.search, stored, family, device))


def check_population(value: Any) -> None:
    """Refuse a --population that is not a count >= 1, "auto" or "off" (None passes).

    >>> check_population("many")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    gentune.errors.GentuneError: --population must be an integer >= 1, auto or off (got 'many')...
    """
    if value is None or value in ("auto", "off") or (_is_int(value) and value >= 0):
        return
    if isinstance(value, str) and value.isdigit():
        return
    raise GentuneError(
        "--population must be an integer >= 1, auto or off",
        value=value,
        fix="pass e.g. --population 8, or --population auto",
    )


def resolve_population(search: SearchOptions, stored: dict | None, family: Family, device: str) -> dict:
    """The StudySettings fields `population` and `promotion` (see SearchOptions).

    A new study trains populations by default only on CUDA, and only for a family that
    supports them (`Family.population`): on a CPU a population gains little over one model at
    a time (README, "Population training"). --strategy pbt needs a population of at least
    PBT_MIN_POPULATION and does without promotion (it continues members itself).
    """
    given: int | str | bool | None = search.population
    if isinstance(given, str) and given.isdigit():
        given = int(given)
    if given in ("off", 0):
        given = False
    supports = bool(getattr(family, "population", False))
    pbt = search.strategy == "pbt"
    if (given not in (None, False) or pbt) and not supports:
        raise GentuneError(
            f"the {family.name} family cannot train as a population (K models stacked in one "
            "process), which --population and --strategy pbt need",
            value=family.name,
            fix="drop --population (trials then train one at a time), or use --model gan-mlp or dcgan",
        )
    if given is None:
        if stored is not None:
            given = stored.get("population")
        elif pbt or (supports and device.startswith("cuda")):
            given = "auto"
    population = given or None
    if pbt and (population is None or (isinstance(population, int) and population < PBT_MIN_POPULATION)):
        raise GentuneError(
            "--strategy pbt copies the top quarter of a population into its bottom quarter, "
            f"so it needs a population of at least {PBT_MIN_POPULATION}",
            value=population,
            fix=f"pass --population {2 * PBT_MIN_POPULATION}, or auto",
        )
    promotion = search.promotion
    if promotion is None:
        old = bool(stored.get("promotion", False)) if stored is not None else None
        promotion = old if old is not None else population is not None and not pbt
    if promotion and pbt:
        raise GentuneError(
            "--strategy pbt continues its best members itself, so promotion does not apply",
            fix="drop --promotion",
        )
    if promotion and population is None:
        raise GentuneError(
            "--promotion continues trials of a population: it needs --population",
            fix="pass --population K (or auto) with --promotion, or drop --promotion",
        )
    if stored is not None:
        below = int(stored.get("rungs_below", 0))
    else:
        below = RUNGS_BELOW if promotion else 0
    return {"population": population, "promotion": bool(promotion), "rungs_below": below}


def cpu_threads(cores: int, load: float) -> int:
    """Torch threads of one process training on the CPU when none are given (--threads): half
    the cores, fewer when other processes keep them busy (`load`: the 1-minute load average), at
    least one. A tutorial-size model is a few small matrix products per step, which gain little
    from a second thread and lose much on oversubscribed cores: on a loaded 2-core machine the
    MLP GAN ran 81 steps/s on one thread and 5 on two (bench/main_job.py compares the main job).

    >>> cpu_threads(2, 0.1), cpu_threads(16, 0.0), cpu_threads(16, 13.2)
    (1, 8, 2)
    """
    return max(1, min(cores // 2, cores - math.ceil(load)))


def population_threads(cores: int, busy: float) -> int:
    """Torch threads of a process training a population on the CPU when none are given: every
    core that other processes leave idle (`busy`: the cores they use now, measured by
    gentune.device.busy_cores). K members' stacked matrix products are K times larger than one
    model's and do use a second thread: gan-mlp on MNIST at K = 8, 231 model-steps/s on one
    thread and 390 on two (`python bench/population.py --data-dir ../shared/data/mnist
    --k 1 4 8 --threads 1`, then `--threads 2`), where one model gains 1.2x (183 and 221).

    >>> population_threads(2, 0.3), population_threads(2, 1.2), population_threads(16, 3.6)
    (2, 1, 12)
    """
    return max(1, cores - round(busy))


# A CPU run without --workers trains one trial per core in as many worker processes, up to
# this many: beyond it TPE proposes too many trials before it hears how the others went.
MAX_AUTO_WORKERS = 4
# ... and only while each worker gets this many trials: starting one (importing torch, loading
# the data and the feature extractor) costs a few seconds.
TRIALS_PER_AUTO_WORKER = 5


def auto_workers(cores: int, trials: int | None) -> int:
    """Worker processes of a CPU run when none are given (--workers): one per core, each with
    one thread, while each gets TRIALS_PER_AUTO_WORKER trials, at most MAX_AUTO_WORKERS (a run
    without a trial count, bounded by --timeout only: one per core). A tutorial-size model gains
    little from a second thread (settings.cpu_threads gives a 2-core machine one), while a
    second process trains a second trial: on this 2-core machine the main job took 0.64-0.71x
    the wall time of one process (bench/main_job.py; two processes each step 25-30% slower than
    one alone, as the two cores share more than their caches).

    >>> auto_workers(2, 20), auto_workers(2, 9), auto_workers(16, 20), auto_workers(16, None)
    (2, 1, 4, 4)
    >>> auto_workers(1, 50)
    1
    """
    by_trials = MAX_AUTO_WORKERS if trials is None else trials // TRIALS_PER_AUTO_WORKER
    return max(1, min(cores, MAX_AUTO_WORKERS, by_trials))


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container
    limit), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_study_name(model: str, dataset: str, strategy: str, objective: str) -> str:
    """MODEL-DATASET-STRATEGY-OBJECTIVE, made a valid study name (`safe_study_name`).

    >>> default_study_name("gan-mlp", "files:my faces", "tpe", "fid")
    'gan-mlp-files-my_faces-tpe-fid'
    """
    dataset = dataset.replace(":", "-")
    return safe_study_name(f"{model}-{dataset}-{strategy}-{objective}")


def budget_name(budget: Budget, n_eval: int | None, default_steps: int) -> str:
    """What sets a budget apart from the default one, as the suffix of a default study name
    ('' for the default budget), so that changing --steps starts a study of its own instead of
    being refused by the study of the default budget. `default_steps`: the steps a trial
    trains when none are given (`StudySettings.budget_for`); any given --n-eval is named, since
    its default depends on the data's size.

    >>> budget_name(Budget(steps=500), None, 3000), budget_name(Budget(steps=3000), None, 3000)
    ('steps500', '')
    >>> budget_name(Budget(epochs=2.5, trial_seconds=60), 200, 3000)
    'epochs2.5-60s-n200'
    """
    parts = []
    if budget.steps is not None and budget.steps != default_steps:
        parts.append(f"steps{budget.steps}")
    if budget.epochs is not None:
        parts.append(f"epochs{budget.epochs:g}")
    if budget.trial_seconds is not None:
        parts.append(f"{budget.trial_seconds:g}s")
    if n_eval is not None:
        parts.append(f"n{n_eval}")
    return "-".join(parts)


def tune_study_name(
    request: TuneRequest, family: Family, objective: str, stored: Callable[[str], dict | None]
) -> str:
    """The default name of a tune of a built-in family (no --study), for `gentune tune` and
    `gentune.tune()`/`create()` alike: MODEL-DATASET-STRATEGY-OBJECTIVE, with `budget_name`'s
    suffix when the budget is not the default one. `stored(name)`: the settings stored by the
    study `name` (None: none); a study of the plain name made before names held the budget is
    resumed under that name when it holds this very budget.
    """
    plain = default_study_name(family.name, request.dataset.label, request.search.strategy, objective)
    name = request.dataset.name
    default_steps = family.default_steps.get(name) or DEFAULT_STEPS.get(name, FALLBACK_STEPS)
    suffix = budget_name(request.budget, request.n_eval, default_steps)
    if not suffix:
        return plain
    old = stored(plain)
    b = request.budget
    asked = StudySettings(
        dataset=request.dataset.label,
        steps=b.steps,
        epochs=b.epochs,
        trial_seconds=b.trial_seconds,
        n_eval=request.n_eval,
    )
    if old is not None and _budget(StudySettings.from_dict(old), family) == _budget(asked, family):
        return plain
    return safe_study_name(f"{plain}-{suffix}")


def _budget(settings: StudySettings, family: Family) -> tuple:
    """(steps, epochs, trial_seconds, n_eval) of a trial, its default steps written out."""
    steps = settings.budget_for(family).get("steps")
    return (steps, settings.epochs, settings.trial_seconds, settings.n_eval)


def safe_study_name(text: str) -> str:
    """The valid study name nearest to `text`: other characters become '_', leading '.', '-'
    and '_' go (what is left of "../"), and it is cut to STUDY_NAME_MAX characters.

    >>> safe_study_name("../runs/x y"), safe_study_name("..")
    ('runs_x_y', 'study')
    """
    name = "".join(c if _NAME_CHARS.fullmatch(c) else "_" for c in text).lstrip("._-")
    return name[:STUDY_NAME_MAX] or "study"


def check_existing_study_name(name: Any) -> str:
    """`name` if it can name a study already on disk: names made before check_study_name's rule
    (a space, say) still open, but none may leave runs/ or be a path.

    >>> check_existing_study_name("gan-mlp-files-my faces-tpe-fid")
    'gan-mlp-files-my faces-tpe-fid'
    """
    if isinstance(name, str) and name and name not in (".", "..") and not set(name) & set("/\\\0"):
        return name
    return check_study_name(name)


def check_study_name(name: Any, *, derived: bool = False) -> str:
    """`name` if it is a valid study name (STUDY_NAME_RULE), else a GentuneError naming what
    broke the rule, before anything is created. `derived`: a name a phase made from a valid
    one by adding a suffix, which may be up to DERIVED_NAME_ROOM characters longer.

    >>> check_study_name("gan-mlp-digits-tpe-fid")
    'gan-mlp-digits-tpe-fid'
    >>> for bad in ("../../x", "/abs", "..", "a" * 300, "a\\0b"):
    ...     try:
    ...         check_study_name(bad)
    ...     except GentuneError as e:
    ...         print(e.rule.split(":")[0], "| fix:", e.fix[:25])
    the study name contains '/' | fix: pass e.g. --study x
    the study name contains '/' | fix: pass e.g. --study abs
    the study name starts with '.' | fix: pass e.g. --study study
    the study name is 300 characters long (at most 100) | fix: pass e.g. --study aaaaaaa
    the study name contains '\\x00' | fix: pass e.g. --study a_b
    """
    limit = STUDY_NAME_MAX + (DERIVED_NAME_ROOM if derived else 0)
    if not isinstance(name, str):
        raise GentuneError(
            f"the study name is not a string: {STUDY_NAME_RULE}", value=name, fix="pass e.g. --study my-study"
        )
    bad = sorted({c for c in name if not _NAME_CHARS.fullmatch(c)})
    if not name:
        why = "is empty"
    elif len(name) > limit:
        why = f"is {len(name)} characters long (at most {limit})"
    elif bad:
        why = f"contains {', '.join(repr(c) for c in bad)}"
    elif name[0] in ".-":
        why = f"starts with {name[0]!r}"
    else:
        return name
    shown = name if len(name) <= 60 else name[:60] + "..."
    raise GentuneError(
        f"the study name {why}: {STUDY_NAME_RULE}",
        value=shown,
        fix=f"pass e.g. --study {safe_study_name(name)}",
    )


def check_same_settings(study_name: str, stored: Any, asked: Any) -> None:
    """Refuse to resume `study_name` under other settings than it stored.

    Steps left to the default and the same steps given are one budget: a study of gan-mlp
    stores steps None, and `--steps 3000` asks for what it trains.
    """
    if isinstance(stored, StudySettings) and isinstance(asked, StudySettings):
        stored, asked = _explicit_steps(stored), _explicit_steps(asked)
    for f in fields(type(asked)):
        if not f.compare:
            continue
        a, b = getattr(stored, f.name), getattr(asked, f.name)
        if a != b:
            raise StudyError(
                f"study {study_name!r} exists with {f.name}={a!r}, but this command asks for "
                f"{f.name}={b!r}; a study keeps one setting so its trials stay comparable",
                fix=f"rerun with the original {f.name}; or start a new study: a new name with "
                f"--study NAME, or --force-new to move the old study's folder aside (nothing is "
                f"deleted) and start {study_name!r} afresh",
            )


def _explicit_steps(settings: StudySettings) -> StudySettings:
    if settings.steps is None and settings.epochs is None:
        return replace(settings, steps=settings.budget_for()["steps"])
    return settings


def check_count(option: str, value: Any, *, minimum: int = 1, example: int) -> None:
    """Refuse a count below `minimum` (or not an integer); None (not given) passes.

    >>> check_count("--workers", 0, example=2)
    Traceback (most recent call last):
    gentune.errors.GentuneError: --workers must be an integer >= 1 (got 0). Fix: pass e.g. --workers 2
    """
    if value is not None and (not _is_int(value) or value < minimum):
        raise GentuneError(
            f"{option} must be an integer >= {minimum}", value=value, fix=f"pass e.g. {option} {example}"
        )


def check_seconds(option: str, value: Any, *, example: float) -> None:
    """Refuse a duration that is not a finite number of seconds > 0; None (no limit) passes."""
    if value is not None and not _positive(value):
        raise GentuneError(
            f"{option} must be a finite number of seconds > 0",
            value=value,
            fix=f"pass e.g. {option} {example:g}, or leave it out for no limit",
        )


def check_seed(seed: Any) -> None:
    """A seed every generator gentune seeds accepts: an integer in [0, MAX_SEED]."""
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise GentuneError(
            f"--seed must be an integer from 0 to {MAX_SEED}", value=seed, fix="pass e.g. --seed 0"
        )


def check_sample_count(option: str, n: Any) -> None:
    """N of a sample metric: FID's covariance needs more images than the feature dimension."""
    if n is not None and (not _is_int(n) or n <= FEATURE_DIM):
        raise GentuneError(
            f"{option} must be an integer above {FEATURE_DIM}, the feature dimension: FID needs "
            "more images than that for a full-rank covariance",
            value=n,
            fix=f"pass e.g. {option} 1000 (more images give a lower, steadier FID)",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )
