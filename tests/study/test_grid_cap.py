"""Issue 14, item 8: a grid has a size gentune can queue, counted without listing its points,
and a grid study queues only the trials it is asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from gentune.api import RunOptions, SearchOptions, run_objective
from gentune.errors import SpaceError
from gentune.search.space import GRID_CAP, CategoricalSpec, FloatSpec, IntSpec, SearchSpace
from gentune.search.strategies import grid_size
from gentune.settings import UserSettings
from gentune.study.store import (
    enqueue_grid,
    open_or_create,
)
from gentune.trial.attrs import OptunaKey, StudyKey

ROOT = Path(__file__).resolve().parents[2]
OBJECTIVES = ROOT / "tests" / "objectives"


def test_a_huge_grid_is_refused_before_anything_is_made(tmp_path):
    """The issue's 1e9-point grid over three int ranges ran out of memory after 26 s."""
    space = tmp_path / "huge.yaml"
    space.write_text(
        "params:\n"
        "  a: {type: int, low: 1, high: 1000}\n"
        "  b: {type: int, low: 1, high: 1000}\n"
        "  c: {type: int, low: 1, high: 1000}\n"
    )
    start = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gentune",
            "tune",
            "--objective-fn",
            f"{OBJECTIVES / 'slow_quadratic.py'}:objective",
        ]
        + ["--strategy", "grid", "--space", str(space), "--study", "g", "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 2 and time.monotonic() - start < 60, r.stderr
    assert "1,000,000,000 points" in r.stderr and "--strategy random" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs" / "g").exists()


def test_grid_size_is_counted_without_listing_points():
    huge = SearchSpace({n: IntSpec(low=0, high=10**9) for n in "abc"})
    start = time.monotonic()
    with pytest.raises(SpaceError, match=r"10,000 a grid study may queue.*Fix: narrow the ranges"):
        grid_size(huge)
    with pytest.raises(SpaceError, match="10,000 a grid study may queue"):
        huge.grid()
    tiny_step = SearchSpace({"lr": FloatSpec(low=0.0, high=1.0, step=1e-300)})
    with pytest.raises(SpaceError, match="may queue"):
        grid_size(tiny_step)
    assert time.monotonic() - start < 1
    at_cap = SearchSpace(
        {"a": IntSpec(low=1, high=GRID_CAP // 10), "b": CategoricalSpec(choices=list(range(10)))}
    )
    assert grid_size(at_cap) == GRID_CAP
    assert SearchSpace({"lr": FloatSpec(low=0.1, high=0.3, step=0.1)}).grid() == {
        "lr": pytest.approx([0.1, 0.2, 0.3])
    }


GRID = SearchSpace(
    {"a": CategoricalSpec(choices=[1, 2, 3]), "b": CategoricalSpec(choices=["p", "q", "r", "s"])}
)


def grid_run(tmp_path: Path, trials: int | None, fn=None) -> optuna.Study:
    def points(trial):
        return trial.suggest_categorical("a", [1, 2, 3]) + len(trial.suggest_categorical("b", list("pqrs")))

    return run_objective(
        fn or points,
        study="g",
        search=SearchOptions(strategy="grid", trials=trials, space=GRID),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    ).study


def test_a_grid_queues_only_the_trials_asked(tmp_path):
    """Every grid point was queued whatever --trials said; now --trials of them, and a rerun
    asking for more queues the next ones."""
    study = grid_run(tmp_path, 5)
    assert len(study.trials) == 5 and study.user_attrs[StudyKey.GRID_QUEUE] == 5
    first = [(t.params["a"], t.params["b"]) for t in study.trials]
    study = grid_run(tmp_path, 8)
    points = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert len(points) == 8 and points[:5] == first and len(set(points)) == 8
    study = grid_run(tmp_path, None)  # the whole grid
    points = [(t.params["a"], t.params["b"]) for t in study.trials]
    assert len(points) == 12 and len(set(points)) == 12
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_queueing_a_grid_stopped_midway_continues_where_it_stopped(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/g.db"
    study = open_or_create("g", url, settings=UserSettings(strategy="grid", seed=0, space={}))
    add = optuna.Study.add_trial
    calls = {"n": 0}

    def stopped_at_the_fourth(self, trial):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        add(self, trial)

    monkeypatch.setattr(optuna.Study, "add_trial", stopped_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        enqueue_grid(study, GRID.grid())
    monkeypatch.setattr(optuna.Study, "add_trial", add)
    assert enqueue_grid(study, GRID.grid()) == 9
    ids = [t.system_attrs[OptunaKey.GRID_ID] for t in study.get_trials(deepcopy=False)]
    assert ids == list(range(12)) and study.user_attrs[StudyKey.GRID_QUEUE] == 12


def test_a_failed_grid_point_is_replaced_by_the_next_on_rerun(tmp_path):
    def fails_on_q(trial):
        a, b = trial.suggest_categorical("a", [1, 2, 3]), trial.suggest_categorical("b", list("pqrs"))
        if b == "q":
            raise ValueError("no q")
        return a

    study = grid_run(tmp_path, 3, fn=fails_on_q)
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    study = grid_run(tmp_path, 3)
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 3 and len(study.trials) == 4
