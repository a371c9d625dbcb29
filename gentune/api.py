"""The public Python API: tune a built-in family, or run a user's own Optuna objective.

>>> from gentune import tune
>>> result = tune(dataset="digits", trials=2, steps=50, runs_dir=tmp)  # doctest: +SKIP
>>> result.best["metrics"]["fid"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.errors import GentuneError, StudyError
from gentune.images import b64, grid_png
from gentune.progress import TrialProgress
from gentune.search.pruners import study_pruner
from gentune.search.space import SearchSpace, check_field, load_space_file
from gentune.search.strategies import grid_size, make_sampler
from gentune.study.store import (
    StudySettings,
    default_storage,
    default_study_name,
    enqueue_grid,
    open_study,
    run,
    stored_settings,
)
from gentune.trial.monitor import compute_settings
from gentune.trial.user_objective import phase_objective

DATA_SEED = 0  # splits are fixed by this seed, so every study of a dataset shares them


@dataclass
class TuneResult:
    study: optuna.Study
    out_dir: Path
    best: dict[str, Any] | None


def resolve_space(model: str, space: str | Path | SearchSpace | None, kind: str = "image") -> SearchSpace:
    """The family's default space for `kind` data, narrowed or replaced by a user's file or
    SearchSpace. With --model auto the file names parameters as in the default ("vae.lr")."""
    from gentune.families import default_space, get_family

    family = get_family(model, kind)
    default = default_space(family, kind)
    if space is None:
        return default
    if isinstance(space, SearchSpace):
        return space
    if model == "auto":
        return load_space_file(space, default, validate_value=check_field(set(default.params), dict))
    valid = {f for f in family.config_cls.__dataclass_fields__}
    return load_space_file(space, default, validate_value=check_field(valid, family.config_cls.from_dict))


def tune(
    *,
    model: str = "gan-mlp",
    dataset: str = "digits",
    data_dir: str | Path | None = None,
    strategy: str = "tpe",
    objective: str | None = None,
    trials: int | None = 20,
    timeout: float | None = None,
    space: str | Path | SearchSpace | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    n_eval: int | None = None,
    seed: int = 0,
    device: str = "auto",
    storage: str | None = None,
    study: str | None = None,
    runs_dir: str | Path = "runs",
    command: str | None = None,
    report: bool = True,
    progress: bool = True,
    workers: int = 1,
    gpus: list[int] | None = None,
    threads: int | None = None,
    pruner: str | None = None,
    patience: int | None = None,
    detectors=None,
    evals: int | None = None,
    eval_every: int | None = None,
    eval_samples: int | None = None,
    prepare: Callable[[optuna.Study], None] | None = None,
    prune_overfitting: bool = False,
    trial_seconds: float | None = None,
) -> TuneResult:
    """Tune `model` on `dataset`; re-running with the same arguments resumes the study.

    `model` is a built-in family (gentune.families.MODELS), "auto" (one search across them) or a
    user's family class as "pkg.module:Class" / "FILE.py:Class" (docs/families.md). `objective`
    defaults to fid on images and nll on text. Without steps or epochs a family trains for its
    own default budget on the dataset; `trial_seconds` also caps each trial's training time
    (the trial then scores the model it has). `prune_overfitting` prunes a trial whose validation loss
    rises while its training loss falls.

    `pruner`, `patience`, `detectors`, `evals`, `eval_every` and `eval_samples` decide how
    trials are watched and stopped early (see gentune.trial.monitor.compute_settings; None: the
    strategy's default, or what an existing study stored). `prepare(study)` runs once the study
    is open, before any trial (gentune.phases.stages uses it to link and seed studies).

    With `workers` > 1, that many processes share the study's storage (see gentune.study.workers):
    each gets `threads` torch threads (default: the cores split evenly) and, with `gpus`,
    one of those GPUs in turn.
    """
    from gentune.families import check_family, portable_model
    from gentune.trial.objective import warn_if_loss

    if steps is not None and epochs is not None:
        raise GentuneError(
            "give the training budget as steps or as epochs, not both",
            value={"steps": steps, "epochs": epochs},
            fix="drop one of them",
        )
    if trial_seconds is not None and not trial_seconds > 0:
        raise GentuneError(
            "--trial-seconds must be a positive number of seconds",
            value=trial_seconds,
            fix="pass e.g. --trial-seconds 300, or leave it out for no time cap",
        )
    model = portable_model(model)
    family, kind, objective = check_family(model, dataset, objective)
    if steps is None and epochs is None:
        steps = family.default_steps.get(dataset)  # None: the study's default (or auto's, per family)
    search_space = resolve_space(model, space, kind)
    sampler = make_sampler(strategy, search_space, seed)
    if strategy == "grid":
        trials = grid_size(search_space) if trials is None else min(trials, grid_size(search_space))
    dataset_label = dataset if dataset != "files" else f"files:{Path(str(data_dir)).name}"
    if dataset == "text" and data_dir is not None:
        dataset_label = f"text:{Path(str(data_dir)).name}"
    settings = StudySettings(
        model=model,
        dataset=dataset_label,
        strategy=strategy,
        objective=objective,
        steps=steps,
        epochs=epochs,
        trial_seconds=trial_seconds,
        n_eval=n_eval,
        seed=seed,
        space=search_space.to_dict(),
        prune_overfitting=prune_overfitting,
    )
    warn_if_loss(settings)
    name = study or default_study_name(replace(settings, model=family.name))
    storage = storage or default_storage(name, Path(runs_dir))
    settings = replace(
        settings,
        **compute_settings(
            strategy,
            pruner=pruner,
            patience=patience,
            detectors=detectors,
            evals=evals,
            eval_every=eval_every,
            eval_samples=eval_samples,
            stored=_stored_settings(storage, name),
            default_eval_samples=family.eval_samples,
        ),
    )
    opened = open_study(settings, storage=storage, study_name=name, sampler=sampler, command=command)
    if trials is not None:
        opened.set_user_attr("target_trials", trials)
    if strategy == "grid":
        enqueue_grid(opened, search_space.grid())
    if prepare is not None:
        prepare(opened)
    if workers > 1:
        from gentune.study.workers import run_workers

        # The parent trains the feature extractor (cached) and stores the floor once, so
        # the workers do not all do it at the same time.
        prepare_evaluator(opened, stored_settings(opened), data_dir, device)
        run_workers(
            name,
            storage,
            workers,
            trials=trials,
            timeout=timeout,
            data_dir=data_dir,
            device=device,
            gpus=gpus,
            threads=threads,
            runs_dir=runs_dir,
            progress=progress,
            metric=objective,
        )
    else:
        work(
            opened,
            data_dir=data_dir,
            device=device,
            trials=trials,
            timeout=timeout,
            runs_dir=runs_dir,
            progress=progress,
            threads=threads,
        )
    return _finish(opened, Path(runs_dir) / name, report, storage)


def work(
    study: optuna.Study | str,
    *,
    storage: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    trials: int | None = None,
    timeout: float | None = None,
    runs_dir: str | Path = "runs",
    progress: bool = True,
    worker_index: int | None = 0,
    threads: int | None = None,
) -> optuna.Study:
    """Run trials of an existing gentune study until it holds `trials` finished trials.

    Everything else (model, data, space, budget, metric) comes from the settings stored in the
    study, so this is what a worker on another machine runs. `trials` defaults to the target
    stored by `tune`. Each worker seeds its sampler with the study seed + `worker_index`
    (None: an index drawn from this worker's host and pid);
    `threads` caps torch's threads, so that workers sharing a machine do not oversubscribe it.
    """
    from gentune.data import dataset_kind
    from gentune.families import get_family
    from gentune.trial.objective import GenerativeObjective, family_budget

    if worker_index is None:
        from gentune.study.workers import auto_worker_index

        worker_index = auto_worker_index()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if isinstance(study, str):
        if storage is None:
            raise GentuneError("a study name needs its storage URL", value=study, fix="pass --storage URL")
        study = open_study(None, storage=storage, study_name=study)
    if study.user_attrs.get("gentune", {}).get("model") == "user":
        return _work_user(study, trials=trials, timeout=timeout, progress=progress, worker_index=worker_index)
    settings = stored_settings(study)
    space = SearchSpace.from_dict(settings.space)
    family = get_family(settings.model, dataset_kind(settings.dataset))
    study = optuna.load_study(
        study_name=study.study_name,
        storage=study._storage,
        sampler=make_sampler(settings.strategy, space, settings.seed, worker=worker_index),
        pruner=study_pruner(settings, family_budget(family, settings)),
    )
    if trials is None:
        trials = study.user_attrs.get("target_trials")
    if settings.strategy == "grid":
        trials = grid_size(space) if trials is None else min(trials, grid_size(space))
    dev, data, evaluator = prepare_evaluator(study, settings, data_dir, device)
    with _progress(progress, trials, study, settings.objective) as bar:
        fn = GenerativeObjective(
            family,
            settings,
            data,
            evaluator,
            space,
            device=dev,
            out_dir=Path(runs_dir) / study.study_name,
            progress=bar,
        )
        run(study, fn, n_trials=trials, timeout=timeout, progress=bar)
    return study


def prepare_evaluator(study: optuna.Study, settings: StudySettings, data_dir, device: str):
    """(device, data, evaluator) of a study; stores the floor and real images once.

    Text has no sample metric: its evaluator is None (text models are scored by their NLL).
    """
    from gentune.data import dataset_kind, load_dataset
    from gentune.device import resolve_device
    from gentune.metrics import Evaluator

    dev = resolve_device(device)
    name, _, _ = settings.dataset.partition(":")  # "files:<folder>" -> "files"
    data = load_dataset(name, data_dir=data_dir, seed=DATA_SEED)
    if dataset_kind(name) == "text":
        return dev, data, None
    evaluator = Evaluator(data, n=settings.n_eval, device=dev, seed=settings.seed).prepare()
    _store_reference(study, evaluator, data)
    return dev, data, evaluator


def _work_user(study: optuna.Study, *, trials, timeout, progress, worker_index) -> optuna.Study:
    """A worker's loop for a study of a user's objective, loaded from the spec stored in it."""
    from gentune.loading import load_objective

    stored = study.user_attrs["gentune"]
    spec = stored.get("objective_fn")
    if not spec:
        raise StudyError(
            f"study {study.study_name!r} runs a Python objective that was not "
            "stored with it, so a worker cannot load it",
            fix="run it with gentune tune --objective-fn FILE.py:FUNC",
        )
    space = SearchSpace.from_dict(stored.get("space", {}))
    study = optuna.load_study(
        study_name=study.study_name,
        storage=study._storage,
        sampler=make_sampler(stored["strategy"], space, stored.get("seed", 0), worker=worker_index),
    )
    trials = study.user_attrs.get("target_trials") if trials is None else trials
    fn = phase_objective(load_objective(spec), study)
    with _progress(progress, trials, study, "value") as bar:
        run(study, fn, n_trials=trials, timeout=timeout, progress=bar)
    return study


def run_objective(
    objective: Callable[[optuna.Trial], float],
    *,
    study: str,
    trials: int | None = 20,
    timeout: float | None = None,
    direction: str = "minimize",
    strategy: str = "tpe",
    seed: int = 0,
    space: str | Path | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    command: str | None = None,
    progress: bool = True,
    workers: int = 1,
    objective_spec: str | None = None,
    prepare: Callable[[optuna.Study], None] | None = None,
) -> TuneResult:
    """Run a user's own Optuna objective under gentune's runner.

    It gets the same storage, resume, Ctrl-C handling, progress display and outputs
    (best.json, report) as a built-in study. The objective is called unchanged, so code
    written for plain Optuna (`trial.suggest_loguniform` included) works as it is.
    `objective_spec` (FILE.py:FUNC) is stored in the study so that `workers` > 1 processes,
    or `gentune worker` on another machine, can load the same objective. Each trial runs with
    the random generators seeded by `seed` (gentune.trial.user_objective); `prepare(study)` runs once
    the study is open (the later phases of gentune.phases.stages use it).
    """
    if direction not in ("minimize", "maximize"):
        raise GentuneError(
            "direction must be minimize or maximize", value=direction, fix="pass --direction minimize"
        )
    search_space = load_space_file(space, SearchSpace()) if space else SearchSpace()
    sampler = make_sampler(strategy, search_space, seed)
    if strategy == "grid":
        trials = grid_size(search_space) if trials is None else min(trials, grid_size(search_space))
    out_dir = Path(runs_dir) / study
    storage = storage or default_storage(study, Path(runs_dir))
    opened = optuna.create_study(
        storage=_storage(storage), study_name=study, sampler=sampler, direction=direction, load_if_exists=True
    )
    if "gentune" not in opened.user_attrs:
        opened.set_user_attr(
            "gentune",
            {
                "model": "user",
                "objective": "user",
                "strategy": strategy,
                "direction": direction,
                "seed": seed,
                "space": search_space.to_dict(),
                "objective_fn": objective_spec,
            },
        )
        if command:
            opened.set_user_attr("command", command)
    if trials is not None:
        opened.set_user_attr("target_trials", trials)
    if strategy == "grid":
        enqueue_grid(opened, search_space.grid())
    if prepare is not None:
        prepare(opened)
    if workers > 1:
        from gentune.study.workers import run_workers

        if not objective_spec:
            raise GentuneError(
                "several workers need the objective as FILE.py:FUNC, to load it in each process",
                value=workers,
                fix="pass objective_spec, or workers=1",
            )
        run_workers(
            study,
            storage,
            workers,
            trials=trials,
            timeout=timeout,
            runs_dir=runs_dir,
            progress=progress,
            metric="value",
        )
        return _finish(opened, out_dir, True, storage)
    seeded = phase_objective(objective, opened)
    with _progress(progress, trials, opened, "value") as bar:

        def wrapped(trial: optuna.Trial) -> float:
            if bar is not None:
                bar.trial_started(trial.number, {})
            return seeded(trial)

        run(opened, wrapped, n_trials=trials, timeout=timeout, progress=bar)
    return _finish(opened, out_dir, True, storage)


def _stored_settings(storage: str, name: str) -> dict | None:
    """The settings dict of an existing study `name`, or None when there is none yet."""
    try:
        return optuna.load_study(study_name=name, storage=_storage(storage)).user_attrs.get("gentune")
    except KeyError:
        return None


def _storage(url: str):
    from gentune.study.store import make_storage

    return make_storage(url)


def _progress(enabled: bool, trials: int | None, study: optuna.Study, metric: str):
    from contextlib import nullcontext

    from gentune.study.store import count_finished

    if not enabled:
        return nullcontext(None)
    return TrialProgress(trials, count_finished(study), metric=metric)


def _store_reference(study: optuna.Study, evaluator, data) -> None:
    """Floor, extractor facts and a grid of real images: computed once, kept with the study."""
    if "floor" not in study.user_attrs:
        study.set_user_attr("floor", evaluator.floor)
        study.set_user_attr("extractor", evaluator.info)
        ref = data.split(evaluator.info.get("reference", "val")).x
        study.set_user_attr("real_png", b64(grid_png(ref[:64])))


def _finish(study: optuna.Study, out_dir: Path, report: bool, storage: str) -> TuneResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_summary(study)
    if best is not None:
        (out_dir / "best.json").write_text(json.dumps(best, indent=2))
    if report:
        write_study_report(storage, study.study_name, out_dir / "report.html")
    return TuneResult(study, out_dir, best)


def write_study_report(storage: str, study_name: str, path: Path) -> Path | None:
    """Write the HTML report beside the study's outputs; a report failure never loses a study."""
    try:
        from gentune.report import write_report
    except ImportError:
        return None
    try:
        write_report(storage, study_name, path)
    except Exception as e:  # noqa: BLE001 - the study is safe; say what went wrong and go on
        warnings.warn(f"the report could not be written: {e!r}", stacklevel=2)
        return None
    return path


def best_summary(study: optuna.Study) -> dict[str, Any] | None:
    """The best trial's parameters, metrics (with N and the floor) and provenance, as JSON."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    attrs = best.user_attrs
    settings = study.user_attrs.get("gentune", {})
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    reasons: dict[str, int] = {}
    for t in pruned:
        r = t.user_attrs.get("prune_reason", "pruned")
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "study": study.study_name,
        "trial": best.number,
        "objective": settings.get("objective"),
        "value": best.value,
        "params": best.params,
        "config": attrs.get("config"),
        "metrics": attrs.get("metrics"),
        "floor": study.user_attrs.get("floor"),
        "extractor": study.user_attrs.get("extractor"),
        "family": attrs.get("family"),
        "final_loss": attrs.get("final_loss"),
        "overfitting": attrs.get("overfitting"),
        "train_seconds": attrs.get("train_seconds"),
        "device": attrs.get("device"),
        "seed": attrs.get("seed"),
        "text_samples": attrs.get("text_samples"),
        "settings": settings,
        "trials": {
            "complete": len(completed),
            "pruned": len(pruned),
            "pruned_by_reason": reasons,
            "failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        },
        "confirmed": _confirmed(study),
    }


def _confirmed(study: optuna.Study) -> dict[str, Any] | None:
    """The --confirm result (gentune.phases.confirm): the pick by mean over seeds, and the ranking."""
    ranking = study.user_attrs.get("confirmed")
    if not ranking:
        return None
    keys = ("source", "params", "mean", "sd", "n", "values", "seeds", "stopped")
    return {"best": ranking[0], "ranking": [{k: r.get(k) for k in keys} for r in ranking]}
