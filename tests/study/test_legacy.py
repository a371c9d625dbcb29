"""Studies written by gentune 0.1.0 (tests/legacy/v0.1.0, see its README) still open, report,
resume and sample. Each test works on its own copy: nothing is ever written under tests/legacy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from gentune.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "tests" / "legacy" / "v0.1.0"
OBJECTIVE = ROOT / "tests" / "objectives" / "noisy_quadratic.py"
# The best trial of each study, as 0.1.0 recorded it.
BEST = {"legacy-gan": 1, "legacy-vae": 0, "legacy-user": 0}
# The commands of the README that made the studies, with --trials one more than they ran.
RESUME = {
    "legacy-gan": "tune --dataset digits --trials 4 --steps 150 --space small.yaml --study legacy-gan "
    "--n-eval 200 --evals 1 --no-report",
    "legacy-user": f"tune --objective-fn {OBJECTIVE}:objective --trials 4 --study legacy-user --no-report",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The caller's GENTUNE_HOME when set (its feature extractor is cached there), else a fresh one."""
    given = os.environ.get("GENTUNE_HOME")
    return Path(given) if given else tmp_path_factory.mktemp("gentune-home")


@pytest.fixture
def work(tmp_path: Path, home: Path, monkeypatch) -> Path:
    """A folder laid out as the studies were made in: small.yaml beside runs/<study>/."""
    shutil.copytree(LEGACY, tmp_path / "runs", ignore=shutil.ignore_patterns("*.md", "*.yaml"))
    shutil.copy(LEGACY / "small.yaml", tmp_path)
    monkeypatch.setenv("GENTUNE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> str:
    """`gentune ARGS` in this process (cheaper than a new one for commands that train nothing)."""
    r = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def gentune(command: str, cwd: Path) -> None:
    """`gentune COMMAND` as a user runs it, in a process of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-m", "gentune", *command.split()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def trials(work: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{work / 'runs' / name / 'study.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.mark.parametrize("name", sorted(BEST))
def test_best_and_report(work, name):
    shown = cli("best", "--study", name, "--runs-dir", "runs")
    assert f"best trial {BEST[name]} of study {name}" in shown
    cli("report", name, "--runs-dir", "runs")
    page = (work / "runs" / name / "report.html").read_text(encoding="utf-8")
    assert name in page and "#" + str(BEST[name]) in page
    if name != "legacy-user":  # the built-in families' stored sample grids reach the page
        assert f'alt="samples of trial {BEST[name]}"' in page and 'alt="real images"' in page


@pytest.mark.parametrize("name", sorted(RESUME))
def test_rerunning_the_command_resumes(work, name):
    before = trials(work, name)
    assert len(before) == 3
    gentune(RESUME[name], work)
    after = trials(work, name)
    assert len(after) == 4 and after[3].state in (TrialState.COMPLETE, TrialState.PRUNED)
    for old, new in zip(before, after):  # the old trials are kept as they were
        assert (new.number, new.state, new.params, new.values) == (
            old.number,
            old.state,
            old.params,
            old.values,
        )


@pytest.mark.parametrize("name", ["legacy-gan", "legacy-vae"])
def test_sample_loads_the_old_checkpoint(work, name):
    shown = cli(
        "sample", "--study", name, "--n", "16", "-o", "s.npy", "--runs-dir", "runs", "--device", "cpu"
    )
    assert "checkpoint" in shown and "retrained" not in shown
    samples = np.load(work / "s.npy")
    assert samples.shape == (16, 8, 8) and samples.dtype == np.float32
    assert 0 <= samples.min() <= samples.max() <= 1 and samples.std() > 0
