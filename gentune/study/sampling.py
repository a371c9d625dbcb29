"""Samples from a trial's generator: load its checkpoint, or retrain it and keep one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from optuna.trial import TrialState

from gentune.errors import GentuneError
from gentune.settings import DATA_SEED
from gentune.study.store import builtin_settings, open_or_create


def sample_trial(
    study_name: str,
    *,
    trial: int | None,
    n: int,
    output: Path,
    seed: int,
    storage: str,
    runs_dir: Path,
    device: str = "auto",
) -> tuple[Path, str]:
    """Write `n` samples of a trial (default: the best) as (N, H, W) float32 in [0, 1]; for a
    text model, n strings to a .txt file beside `output`.

    Returns the output path and where the generator came from ("checkpoint" or "retrained").
    """
    from gentune.data import dataset_kind, load_dataset
    from gentune.device import resolve_device
    from gentune.families import get_family

    if n < 1:
        raise GentuneError("--n must be at least 1", value=n, fix="pass --n 10000")
    study = open_or_create(study_name, storage)
    settings = builtin_settings(study)
    chosen = _choose_trial(study, trial)
    family = get_family(settings.model, dataset_kind(settings.dataset))
    family, _ = (
        family.pick({"model": chosen.user_attrs.get("family")})
        if settings.model == "auto"
        else (family, None)
    )
    dev = str(resolve_device(device))
    ckpt = runs_dir / study_name / "trials" / str(chosen.number) / "generator.pt"
    if ckpt.exists():
        _, generator, _ = family.load(ckpt, device=dev)
        source = f"checkpoint {ckpt}"
    else:
        if settings.dataset.startswith(("files:", "text:")):
            raise GentuneError(
                "this trial has no checkpoint here and its data are your own files",
                value=str(ckpt),
                fix="run gentune sample where the study was tuned",
            )
        data = load_dataset(settings.dataset.partition(":")[0], seed=DATA_SEED)
        config = family.config_cls.from_dict(chosen.user_attrs["config"])
        result = family.train(config, data, **settings.budget_for(family), seed=settings.seed, device=dev)
        family.save(ckpt, config, result.model, extra={"seed": settings.seed})
        generator = result.model
        source = f"retrained trial {chosen.number}; checkpoint kept at {ckpt}"
    images = family.sample(generator, n, seed=seed, device=dev)
    if isinstance(images, list):  # a text model
        output = output.with_suffix(".txt")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text("\n\n---\n\n".join(images))
        return output, source
    arr = ((images.numpy().astype(np.float32) + 1.0) / 2.0).clip(0.0, 1.0)
    arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, arr)
    return output, source


def _choose_trial(study, number: int | None):
    trials = study.get_trials(deepcopy=False)
    if number is None:
        try:
            return study.best_trial
        except ValueError:
            raise GentuneError(
                f"study {study.study_name!r} has no completed trial", fix="run gentune tune first"
            ) from None
    by_number = {t.number: t for t in trials}
    chosen = by_number.get(number)
    if chosen is None or chosen.state != TrialState.COMPLETE or "config" not in chosen.user_attrs:
        done = sorted(t.number for t in trials if t.state == TrialState.COMPLETE)
        raise GentuneError(
            f"trial {number} is not a completed trial of {study.study_name!r}",
            value=number,
            fix=f"choose one of: {done}",
        )
    return chosen
