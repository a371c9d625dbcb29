"""`gentune sample` of a trial whose checkpoint is gone retrains it as the trial was trained:
under the trial's own seed (a --confirm re-run trains under another seed than the study's) and
within the study's time cap per trial (--trial-seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from gentune.study.sampling import Retrained, retrain, sample_trial, trial_family
from gentune.study.store import stored_settings
from gentune.trial import attrs
from gentune.trial.attrs import TrialKey

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
# One small healthy configuration: the test is about seeds and caps, not the search.
SPACE = "mode: narrow\nparams:\n  width: 32\n  depth: 1\n  optimizer: adam\n  d_steps: 1\n"
TINY = ["--dataset", "digits", "--n-eval", "200", "--evals", "0", "--detectors", "off", "--no-report"]


def gentune(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENTUNE_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "gentune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The caller's GENTUNE_HOME when set (its feature extractor is cached there), else a fresh one."""
    given = os.environ.get("GENTUNE_HOME")
    return Path(given) if given else tmp_path_factory.mktemp("gentune-home")


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory, home) -> Path:
    """Study `s` (seed 0) of one trial, and `s-confirm`, whose trial 0 re-runs it under seed 1."""
    cwd = tmp_path_factory.mktemp("confirm")
    (cwd / "space.yaml").write_text(SPACE)
    gentune(
        "tune",
        *TINY,
        "--steps",
        "100",
        "--space",
        "space.yaml",
        "--trials",
        "1",
        "--study",
        "s",
        "--confirm",
        "1",
        "--confirm-seeds",
        "1",
        cwd=cwd,
        home=home,
    )
    return cwd


def _open(cwd: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'runs' / name / 'study.db'}")


def test_a_retrained_trial_trains_under_its_own_seed(confirmed):
    study = _open(confirmed, "s-confirm")
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    settings = stored_settings(study)
    assert attrs.seed(trial) == 1 != settings.seed  # the premise: not the study's seed
    again = retrain(settings, trial_family(settings, trial), trial, device="cpu")
    assert again.seed == 1 and again.result.steps == attrs.steps(trial) == 100
    recorded = attrs.final_loss(trial)
    assert recorded and again.result.losses.keys() >= recorded.keys()
    for name, value in recorded.items():
        assert again.result.losses[name] == pytest.approx(value, rel=1e-5), name


def test_sample_without_checkpoint_gives_the_trials_generator_back(confirmed):
    runs = confirmed / "runs"
    ckpt = runs / "s-confirm" / "trials" / "0" / "generator.pt"
    kw = dict(trial=0, n=64, seed=0, storage=f"sqlite:///{runs / 's-confirm' / 'study.db'}", runs_dir=runs)
    path, source = sample_trial("s-confirm", output=confirmed / "a.npy", device="cpu", **kw)
    assert source.startswith("checkpoint")
    ckpt.rename(ckpt.with_suffix(".bak"))
    path_b, source = sample_trial("s-confirm", output=confirmed / "b.npy", device="cpu", **kw)
    assert source.startswith("retrained") and ckpt.exists()
    np.testing.assert_allclose(np.load(path_b), np.load(path), atol=1e-5)


@pytest.fixture(scope="module")
def capped(tmp_path_factory, home) -> Path:
    """A study whose one trial was stopped by a 1 s cap long before its 20000 steps."""
    cwd = tmp_path_factory.mktemp("capped")
    (cwd / "space.yaml").write_text(SPACE)
    gentune(
        "tune",
        *TINY,
        "--steps",
        "20000",
        "--trial-seconds",
        "1",
        "--space",
        "space.yaml",
        "--trials",
        "1",
        "--study",
        "c",
        cwd=cwd,
        home=home,
    )
    return cwd


def test_a_retrained_trial_keeps_the_studys_time_cap(capped):
    study = _open(capped, "c")
    trial = study.trials[0]
    assert attrs.stop_reason(trial) == "max_seconds" and attrs.steps(trial) < 20000
    settings = stored_settings(study)
    again = retrain(settings, trial_family(settings, trial), trial, device="cpu")
    assert again.result.stop_reason == "max_seconds" and again.result.steps < 20000
    assert again.result.seconds < 10


def test_the_source_says_when_a_cap_stopped_the_retrain_at_another_step():
    capped = {TrialKey.STEPS: 790, TrialKey.STOP_REASON: "max_seconds"}
    trial = optuna.trial.create_trial(value=1.0, user_attrs=capped)
    again = Retrained(
        config=None,
        seed=0,
        budget={"steps": 5000},
        result=SimpleNamespace(steps=812, stop_reason="max_seconds"),
    )
    assert "60 s cap per trial stopped it at step 812, the trial at step 790" in again.note(trial, 60.0)
    same = Retrained(
        config=None,
        seed=0,
        budget={"steps": 5000},
        result=SimpleNamespace(steps=790, stop_reason="max_seconds"),
    )
    assert same.note(trial, 60.0) == ""
