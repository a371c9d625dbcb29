"""What a study's trials run: a built-in family scored by its samples, or a user's own objective.

Both are built from the settings stored in the study alone, so a worker on another machine
runs the same trials as the process that created the study. The runner asks a target for a
sampler, a pruner and the objective of one trial, and never which kind of target it has.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch

from gentune.data import ImageDataset, load_dataset
from gentune.device import resolve_device
from gentune.errors import StudyError
from gentune.families import Family, get_family
from gentune.loading import load_objective, trust_changed_code
from gentune.metrics import Evaluator
from gentune.search.space import SearchSpace
from gentune.search.strategies import make_sampler
from gentune.settings import DATA_SEED, StudySettings, UserSettings
from gentune.study.store import stored_settings
from gentune.trial.attrs import code_sha256
from gentune.trial.objective import GenerativeObjective, Value
from gentune.trial.record import store_reference
from gentune.trial.user_objective import phase_objective


class Target(Protocol):
    """The contract between a study and what its trials run."""

    metric: str  # the name progress displays show for a trial's value

    def sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        """The study's sampler, seeded for worker `worker` (0 for a single process)."""
        ...

    def pruner(self) -> optuna.pruners.BasePruner | None:
        """The study's pruner (None: Optuna's default)."""
        ...

    def objective(
        self, study: optuna.Study, *, runs_dir: Path, data_dir: Any, device: str, progress: Any
    ) -> Callable[[optuna.Trial], Value]:
        """The objective one process runs for `study`'s trials."""
        ...


class BuiltinTarget:
    """A built-in (or a user's) model family, trained and scored by what it generates."""

    def __init__(self, settings: StudySettings, sha256: str | None = None, data: Any = None):
        """`sha256`: the hash a user's FILE.py family must have to be run (see gentune.loading);
        `data`: the study's dataset when this process has already loaded it."""
        self.settings, self.data = settings, data
        self.family: Family = get_family(settings.model, settings.dataset_ref.kind, sha256=sha256)
        self.space = SearchSpace.from_dict(settings.space)
        self.metric = settings.objectives[0]  # a multi-objective study shows the others beside it

    def sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        return make_sampler(self.settings.strategy, self.space, self.settings.seed, worker=worker)

    def pruner(self) -> optuna.pruners.BasePruner:
        return self.settings.pruner_for(self.family)

    def prepare(
        self, study: optuna.Study, data_dir: Any, device: str, progress: Any = None
    ) -> tuple[torch.device, Any, Any]:
        """(device, data, evaluator); stores the floor and a grid of real images in the study once.

        Text has no sample metric: its evaluator is None (text models are scored by their NLL).
        `progress` (a gentune.progress.TrialProgress) shows the extractor's training and the floor.
        """
        dev = resolve_device(device)
        ref = self.settings.dataset_ref
        data = (
            self.data if self.data is not None else load_dataset(ref.name, data_dir=data_dir, seed=DATA_SEED)
        )
        if not isinstance(data, ImageDataset):  # text is scored by its NLL
            return dev, data, None
        evaluator = Evaluator(
            data,
            n=self.settings.n_eval,
            device=dev,
            seed=self.settings.seed,
            progress=None if progress is None else progress.prepare,
        ).prepare()
        store_reference(study, evaluator)
        return dev, data, evaluator

    def objective(
        self, study: optuna.Study, *, runs_dir: Path, data_dir: Any, device: str, progress: Any
    ) -> Callable[[optuna.Trial], Value]:
        dev, data, evaluator = self.prepare(study, data_dir, device, progress)
        return GenerativeObjective(
            self.family,
            self.settings,
            data,
            evaluator,
            self.space,
            device=dev,
            out_dir=Path(runs_dir) / study.study_name,
            progress=progress,
        )


class UserTarget:
    """A user's own Optuna objective, called unchanged (seeded, and under a phase's space)."""

    metric = "value"

    def __init__(self, settings: UserSettings, fn: Callable[[optuna.Trial], float] | None = None):
        self.settings = settings
        self.fn = fn

    def sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        space = SearchSpace.from_dict(self.settings.space)
        return make_sampler(self.settings.strategy, space, self.settings.seed, worker=worker)

    def pruner(self) -> None:
        return None

    def objective(
        self, study: optuna.Study, *, runs_dir: Path, data_dir: Any, device: str, progress: Any
    ) -> Callable[[optuna.Trial], float]:
        fn = self.fn
        if fn is None:
            if not self.settings.objective_fn:
                raise StudyError(
                    f"study {study.study_name!r} runs a Python objective that was not stored with it, "
                    "so a worker cannot load it",
                    fix="run it with gentune tune --objective-fn FILE.py:FUNC",
                )
            fn = load_objective(self.settings.objective_fn, sha256=pinned_sha256(study))
        seeded = phase_objective(fn, study)

        def call(trial: optuna.Trial) -> float:
            if progress is not None:
                progress.trial_started(trial.number, {})
            return seeded(trial)

        return call


def target_of(
    study: optuna.Study, fn: Callable[[optuna.Trial], float] | None = None, data: Any = None
) -> BuiltinTarget | UserTarget:
    """The target a study's stored settings describe; `fn` is a user's objective and `data` the
    study's dataset, when this process already holds them."""
    settings = stored_settings(study)
    if isinstance(settings, UserSettings):
        return UserTarget(settings, fn)
    return BuiltinTarget(settings, sha256=pinned_sha256(study), data=data)


def pinned_sha256(study: optuna.Study) -> str | None:
    """The hash a user's file loaded from `study`'s settings must have: the one stored at its
    creation, or None (any) with --trust-changed-code. The study names the file, so whoever can
    write to its database chooses what a worker imports; the hash keeps that to the file the
    study was created with (docs/distributed.md)."""
    return None if trust_changed_code() else code_sha256(study)
