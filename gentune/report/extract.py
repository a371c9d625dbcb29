"""Read what a report needs out of a study's storage, as plain data (see docs/storage.md).

Nothing here draws: plots.py and html.py turn these structures into figures and a page, the
way Optuna's visualization package separates `_get_*_info` from `_get_*_plot`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.report.lineage import lineage_of
from gentune.study.storage import hide_command_password
from gentune.study.store import open_or_create
from gentune.trial import attrs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEY_METRICS = ("fid", "kid", "precision", "recall", "classes_covered")


@dataclass(frozen=True)
class TrialInfo:
    """One trial, flattened: everything the report shows about it."""

    number: int
    state: str  # TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: tuple[float, ...] | None
    params: dict
    metrics: dict
    config: dict
    prune_reason: str | None
    error: str | None
    interrupted: bool
    duration_s: float | None
    train_seconds: float | None
    worker: str | None
    device: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    curve: list[tuple[int, float]] = field(default_factory=list)
    samples_png: str | None = None
    samples_progress: list[tuple[int, str]] = field(default_factory=list)
    text_samples: list[str] = field(default_factory=list)
    loss_curves: list[dict] = field(default_factory=list)  # {step, train, val}: the overfitting watch
    overfitting: bool = False
    family: str | None = None  # the family that trained it (with --model auto, the one drawn)
    final_loss: dict[str, float] = field(default_factory=dict)  # its finite final training losses
    lineage: dict[str, Any] = field(default_factory=dict)  # promotion / PBT keys (report.lineage)

    @property
    def values_or_empty(self) -> tuple[float, ...]:
        return self.values or ()


@dataclass(frozen=True)
class StudyInfo:
    """A study's attributes and its trials in number order."""

    name: str
    directions: tuple[str, ...]  # "minimize" / "maximize", one per objective
    objective_names: tuple[str, ...]
    gentune: dict
    command: str | None  # passwords hidden: studies made before gentune hid them hold them
    floor: dict
    extractor: dict
    real_png: str | None
    trials: tuple[TrialInfo, ...]
    noise_band: dict | None = None  # the best trial re-scored under other latent seeds

    @property
    def completed(self) -> list[TrialInfo]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.values]

    @property
    def param_names(self) -> list[str]:
        """Parameter names in the order they first appear."""
        return list(dict.fromkeys(p for t in self.trials for p in t.params))


def open_study(storage: str, study_name: str) -> optuna.Study:
    """Load an existing study (gentune.study.store.open_or_create); a path to a .db file is
    accepted as a sqlite storage."""
    if "://" not in storage and not storage.endswith(".log"):
        storage = f"sqlite:///{Path(storage)}"
    return open_or_create(study_name, storage)


def clean_png(b64) -> str | None:
    """A stored base64 PNG without whitespace, or None if it is missing or not a PNG.

    Only strings that pass this check reach the page, so an image attribute cannot carry markup.
    """
    if not isinstance(b64, str):
        return None
    b64 = "".join(b64.split())
    return b64 if decode_png(b64) is not None else None


def _progress(raw) -> list[tuple[int, str]]:
    if not isinstance(raw, list):
        return []
    steps = [(p.get("step"), clean_png(p.get("png"))) for p in raw if isinstance(p, dict)]
    return [(int(step), png) for step, png in steps if isinstance(step, (int, float)) and png]


def _loss_curves(raw) -> list[dict]:
    """The trainer's {step, train, val} points that have finite numbers, by step."""
    if not isinstance(raw, list):
        return []
    points = []
    for p in raw:
        if not isinstance(p, dict):
            continue
        step, train, val = (_finite(p.get(k)) for k in ("step", "train", "val"))
        if step is not None and train is not None and val is not None:
            points.append({"step": int(step), "train": train, "val": val})
    return sorted(points, key=lambda p: p["step"])


def _final_loss(raw: dict | None) -> dict[str, float]:
    """The finite numbers of a trial's final losses (a diverged loss is stored as null)."""
    finite = {k: _finite(v) for k, v in (raw or {}).items()}
    return {k: v for k, v in finite.items() if v is not None}


def _finite(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _trial_info(t: FrozenTrial) -> TrialInfo:
    duration = t.duration.total_seconds() if t.duration is not None else None
    curve = sorted(
        (int(s), float(v)) for s, v in t.intermediate_values.items() if v is not None and math.isfinite(v)
    )
    return TrialInfo(
        number=t.number,
        state=t.state.name,
        values=tuple(t.values) if t.values else None,
        params=dict(t.params),
        metrics=dict(attrs.metrics(t) or {}),
        config=dict(attrs.config(t) or {}),
        prune_reason=attrs.prune_reason(t) if t.state == TrialState.PRUNED else None,
        error=attrs.error(t),
        interrupted=attrs.interrupted(t),
        duration_s=duration,
        train_seconds=attrs.train_seconds(t),
        worker=attrs.worker(t),
        device=attrs.device(t),
        start=t.datetime_start,
        end=t.datetime_complete,
        curve=curve,
        samples_png=clean_png(attrs.samples_png(t)),
        samples_progress=_progress(attrs.samples_progress(t)),
        text_samples=attrs.text_samples(t) or [],
        loss_curves=_loss_curves(attrs.loss_curves(t)),
        overfitting=attrs.overfitting(t),
        family=attrs.family(t),
        final_loss=_final_loss(attrs.final_loss(t)),
        lineage=lineage_of(t),
    )


def _objective_names(study: optuna.Study, gentune: dict) -> tuple[str, ...]:
    n = len(study.directions)
    if study.metric_names and len(study.metric_names) == n:
        return tuple(study.metric_names)
    objective = gentune.get("objective")
    if isinstance(objective, list) and len(objective) == n:
        return tuple(str(o) for o in objective)
    if isinstance(objective, str) and n == 1:
        return (objective,)
    return ("objective",) if n == 1 else tuple(f"objective {i}" for i in range(n))


def extract_study(study: optuna.Study) -> StudyInfo:
    """Everything the report shows, read once from storage."""
    gentune = attrs.settings(study)
    return StudyInfo(
        name=study.study_name,
        directions=tuple(d.name.lower() for d in study.directions),
        objective_names=_objective_names(study, gentune),
        gentune=gentune,
        command=_without_passwords(attrs.command(study)),
        floor=dict(attrs.floor(study) or {}),
        extractor=dict(attrs.extractor(study) or {}),
        real_png=clean_png(attrs.real_png(study)),
        trials=tuple(_trial_info(t) for t in study.get_trials(deepcopy=False)),
        noise_band=attrs.noise_band(study),
    )


def _without_passwords(command: str | None) -> str | None:
    """A stored command line as the report may show it: a report is made to be shared, and
    studies created before gentune hid passwords stored --storage URLs whole."""
    return None if command is None else hide_command_password(command)


def state_counts(info: StudyInfo) -> dict:
    """Trial counts: completed, pruned by reason, failed (interrupted apart), still running."""
    pruned: dict[str, int] = {}
    for t in info.trials:
        if t.state == "PRUNED":
            reason = t.prune_reason or "pruned"
            pruned[reason] = pruned.get(reason, 0) + 1
    count = lambda pred: sum(1 for t in info.trials if pred(t))  # noqa: E731
    return {
        "total": len(info.trials),
        "completed": count(lambda t: t.state == "COMPLETE"),
        "pruned": dict(sorted(pruned.items(), key=lambda kv: -kv[1])),
        "failed": count(lambda t: t.state == "FAIL" and not t.interrupted),
        "interrupted": count(lambda t: t.state == "FAIL" and t.interrupted),
        "running": count(lambda t: t.state in ("RUNNING", "WAITING")),
    }


def compute_totals(info: StudyInfo) -> dict:
    """Summed wall time of finished trials, summed training time, and the workers used."""
    return {
        "wall_seconds": sum(t.duration_s or 0.0 for t in info.trials),
        "train_seconds": sum(float(t.train_seconds or 0.0) for t in info.trials),
        "workers": sorted({t.worker for t in info.trials if t.worker}),
        "devices": sorted({t.device for t in info.trials if t.device}),
    }


def _dominates(a: tuple, b: tuple, signs: tuple) -> bool:
    better_or_equal = all(s * x <= s * y for x, y, s in zip(a, b, signs))
    return better_or_equal and any(s * x < s * y for x, y, s in zip(a, b, signs))


def best_trials(info: StudyInfo, k: int | None = None) -> list[TrialInfo]:
    """The best completed trials, best first: by value, or the Pareto front by first objective."""
    signs = tuple(1 if d == "minimize" else -1 for d in info.directions)
    done = [t for t in info.completed if len(t.values_or_empty) == len(signs)]
    if len(signs) > 1:
        done = [
            t for t in done if not any(_dominates(o.values_or_empty, t.values_or_empty, signs) for o in done)
        ]
    done.sort(key=lambda t: (signs[0] * t.values_or_empty[0], t.number))
    return done[:k] if k is not None else done


def history(info: StudyInfo) -> dict:
    """Trial numbers, first-objective values and the best value so far, for completed trials."""
    sign = 1 if info.directions[0] == "minimize" else -1
    numbers: list[int] = []
    values: list[float] = []
    best: list[float] = []
    for t in info.completed:
        value = t.values_or_empty[0]
        numbers.append(t.number)
        values.append(value)
        best.append(value if not best else sign * min(sign * best[-1], sign * value))
    return {"numbers": numbers, "values": values, "best": best, "name": info.objective_names[0]}


def top_params(info: StudyInfo, importance: dict[str, float], k: int) -> list[str]:
    """The k most important parameters, or the first k when importances are unknown."""
    return list(importance or info.param_names)[:k]


def decode_png(b64: str | None) -> bytes | None:
    """The PNG bytes of a stored base64 image, or None if it is missing or not a PNG."""
    if not isinstance(b64, str):
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if raw.startswith(PNG_SIGNATURE) else None
