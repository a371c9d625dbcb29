"""Build Optuna studies shaped like a gentune study (docs/storage.md) without training anything.

Trials are added with `study.add_trial` so that their start/end times, workers, intermediate
values and sample grids look like a real run spread over two workers.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

HOSTILE = "<script>alert(1)</script>"
WORKERS = ("node-a:101", "node-b:202")
STEPS = (250, 500, 750, 1000)
ACTIVATIONS = ("relu", "leaky_relu", "tanh")


def _distributions(hostile: bool) -> dict:
    activations = ACTIVATIONS + ((HOSTILE,) if hostile else ())
    return {
        "lr": FloatDistribution(1e-5, 1e-2, log=True),
        "batch_size": CategoricalDistribution([32, 64, 128]),
        "hidden": IntDistribution(64, 512, step=64),
        "activation": CategoricalDistribution(activations),
    }


def grid_png(quality: float, rng: np.random.Generator, tile: int = 28, side: int = 8) -> str:
    """A base64 PNG grid of side x side blob 'digits'; lower quality means more noise."""
    yy, xx = np.mgrid[0:tile, 0:tile] / tile
    tiles = []
    for _ in range(side * side):
        cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3)
        ring = np.exp(-((np.hypot(xx - cx, yy - cy) - r) ** 2) / 0.004)
        noise = rng.normal(0, 1, (tile, tile)) * (1 - quality) * 0.6
        tiles.append(np.clip(ring * quality + noise, 0, 1))
    rows = [np.concatenate(tiles[i * side : (i + 1) * side], axis=1) for i in range(side)]
    img = Image.fromarray((np.concatenate(rows, axis=0) * 255).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fid(params: dict, step: int) -> float:
    """A made-up FID: best near lr=2e-4, hidden=256, falling with training steps."""
    lr_term = 40 * abs(np.log10(params["lr"]) - np.log10(2e-4))
    hidden_term = abs(params.get("hidden", 256) - 256) / 8
    act_term = {"leaky_relu": -5.0, "tanh": 12.0}.get(params.get("activation", "relu"), 0.0)
    return 30 + lr_term + hidden_term + act_term + 400 / (1 + step / 150)


def _study_attrs(n_objectives: int, rng: np.random.Generator, images: bool) -> dict:
    objective = "fid" if n_objectives == 1 else ["fid", "recall"]
    attrs = {
        "gentune": {
            "version": "0.1.0",
            "model": "gan-mlp",
            "dataset": "mnist",
            "strategy": "tpe",
            "objective": objective,
            "direction": "minimize",
            "budget": {"steps": STEPS[-1]},
            "space": {"lr": [1e-5, 1e-2]},
            "seed": 0,
            "n_eval": 2000,
            "device": "cpu",
        },
        "command": "gentune tune --model gan-mlp --trials 20 --objective fid 'a&b' <x>",
        "floor": {
            "fid": 1.9,
            "kid": 0.0004,
            "kid_std": 0.0002,
            "precision": 0.81,
            "recall": 0.79,
            "label_entropy": 2.30,
            "classes_covered": 10,
            "n": 2000,
        },
        "extractor": {
            "kind": "lenet",
            "feature_dim": 128,
            "test_accuracy": 0.991,
            "n": 10000,
            "reference": "mnist-test",
            "n_ref": 10000,
            "trust": "FID on LeNet features; compare only within this study",
        },
    }
    if images:
        attrs["real_png"] = grid_png(1.0, rng)
    return attrs


def _trial(
    number: int,
    params: dict,
    state: TrialState,
    start: dt.datetime,
    worker: str,
    n_objectives: int,
    rng: np.random.Generator,
    images: bool,
    text: bool,
    hostile: bool,
) -> optuna.trial.FrozenTrial:
    """One finished trial with the user attributes a gentune trial carries."""
    steps = {TrialState.PRUNED: STEPS[:2], TrialState.FAIL: STEPS[:1]}.get(state, STEPS)
    curve = {s: _fid(params, s) + rng.normal(0, 2) for s in steps}
    fid = curve[steps[-1]]
    recall = float(np.clip(0.9 - fid / 400 + rng.normal(0, 0.03), 0, 1))
    attrs = {
        "config": {**params, "steps": STEPS[-1], "z_dim": 64},
        "worker": worker,
        "device": "cpu",
        "seed": number,
        "train_seconds": 40.0 + 10 * len(steps),
    }
    if state == TrialState.COMPLETE:
        attrs["metrics"] = {
            "fid": fid,
            "kid": fid / 1e4,
            "kid_std": fid / 5e4,
            "precision": 0.7,
            "recall": recall,
            "label_entropy": 2.2,
            "classes_covered": 10,
            "n": 2000,
        }
        attrs["final_loss"] = {"g": 0.9, "d": 1.2}
        # The trainer's overfitting watch; every fifth trial's validation loss turns up.
        rising = number % 5 == 0
        attrs["loss_curves"] = [
            {"step": s, "train": 1.5 - 0.2 * i, "val": 1.6 - 0.2 * i + (0.35 * i if rising else 0)}
            for i, s in enumerate(steps)
        ]
        attrs["overfitting"] = rising
        quality = float(np.clip(1 - fid / 300, 0.05, 0.95))
        if images:
            attrs["samples_png"] = grid_png(quality, rng)
            attrs["samples_progress"] = [
                {"step": s, "png": grid_png(quality * (i + 1) / len(steps), rng)} for i, s in enumerate(steps)
            ]
        if text:
            attrs["text_samples"] = [
                "ROMEO: what light through yonder window",
                HOSTILE if hostile else "JULIET: & so <farewell>",
            ]
    elif state == TrialState.PRUNED:
        attrs["prune_reason"] = (HOSTILE if hostile else "diverged") if number % 2 else "pruned"
    else:
        attrs["error"] = "RuntimeError: CUDA out of memory <oops>"
    value = {}
    if state == TrialState.COMPLETE:
        value = {"value": fid} if n_objectives == 1 else {"values": [fid, recall]}
    trial = create_trial(
        state=state,
        params=params,
        user_attrs=attrs,
        distributions={k: _distributions(hostile)[k] for k in params},
        intermediate_values=curve if n_objectives == 1 else None,
        **value,
    )
    trial.datetime_start = start
    trial.datetime_complete = start + dt.timedelta(seconds=attrs["train_seconds"] + 5)
    return trial


def make_study(
    tmp_path: Path,
    *,
    name: str = "demo",
    n_trials: int = 20,
    params: tuple[str, ...] = ("lr", "batch_size", "hidden", "activation"),
    n_objectives: int = 1,
    n_pruned: int = 4,
    n_failed: int = 1,
    images: bool = True,
    text: bool = False,
    hostile: bool = False,
    seed: int = 0,
) -> tuple[str, str]:
    """Create a sqlite study in tmp_path and return (storage_url, study_name).

    The first n_failed trials fail, the next n_pruned are pruned, the rest complete.
    hostile=True puts HTML/script injections into a categorical choice, prune reasons and texts.
    """
    rng = np.random.default_rng(seed)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    directions = ["minimize"] if n_objectives == 1 else ["minimize", "maximize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    for key, value in _study_attrs(n_objectives, rng, images).items():
        study.set_user_attr(key, value)
    clock = {w: dt.datetime(2025, 1, 1, 9, 0, 0) for w in WORKERS}
    for number in range(n_trials):
        state = (
            TrialState.FAIL
            if number < n_failed
            else TrialState.PRUNED
            if number < n_failed + n_pruned
            else TrialState.COMPLETE
        )
        sampled = {
            "lr": float(10 ** rng.uniform(-5, -2)),
            "batch_size": int(rng.choice([32, 64, 128])),
            "hidden": int(rng.integers(1, 9) * 64),
            "activation": (HOSTILE if hostile and number == n_trials - 1 else ACTIVATIONS[number % 3]),
        }
        worker = WORKERS[number % len(WORKERS)]
        trial = _trial(
            number,
            {k: sampled[k] for k in params},
            state,
            clock[worker],
            worker,
            n_objectives,
            rng,
            images,
            text,
            hostile,
        )
        clock[worker] = trial.datetime_complete + dt.timedelta(seconds=2)
        study.add_trial(trial)
    return storage, name
