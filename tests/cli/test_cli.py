"""The command line, end to end on the embedded digits with tiny budgets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cli_here
import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

pytestmark = pytest.mark.usefixtures("one_thread")  # for the commands run in this process
ROOT = Path(__file__).resolve().parents[2]
TINY = ["--dataset", "digits", "--steps", "150", "--n-eval", "200"]


@pytest.fixture(scope="module")
def home(tmp_path_factory, digits_extractor):
    """The commands' GENTUNE_HOME, holding the digits extractor already (nothing here checks its
    training; tests/metrics and tests/test_progress do)."""
    home = tmp_path_factory.mktemp("gentune-home")
    (home / "extractors").mkdir()
    shutil.copy2(digits_extractor, home / "extractors" / digits_extractor.name)
    return home


def gentune(*args, home: Path, cwd: Path, timeout: float = 300, env: dict | None = None):
    env = {
        "GENTUNE_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "gentune", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def gentune_here(*args, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`gentune ARGS` in this process with the home and folder that `gentune` gives a fresh one."""
    return cli_here.gentune_here(*args, cwd=cwd, env={"GENTUNE_HOME": str(home)})


@pytest.fixture(scope="module")
def tiny_study(home, tmp_path_factory):
    """A 3-trial TPE study on digits, run through the CLI once for the tests below."""
    cwd = tmp_path_factory.mktemp("work")
    r = gentune("tune", *TINY, "--trials", "3", "--study", "tiny", home=home, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return cwd, r


def test_tune_prints_best_with_fid_n_and_floor(tiny_study):
    cwd, r = tiny_study
    assert "best trial" in r.stdout and "fid" in r.stdout and "N = 200" in r.stdout
    assert "floor" in r.stdout
    out = cwd / "runs" / "tiny"
    best = json.loads((out / "best.json").read_text())
    assert best["metrics"]["n"] == 200 and best["floor"]["n"] == 200
    assert best["metrics"]["fid"] > best["floor"]["fid"] >= 0
    assert best["extractor"]["test_accuracy"] > 0.9
    assert (out / "report.html").exists()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["command"].startswith("gentune tune")
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            a = t.user_attrs
            for key in (
                "config",
                "metrics",
                "final_loss",
                "train_seconds",
                "device",
                "seed",
                "samples_png",
                "worker",
            ):
                assert key in a, key
            assert (out / "trials" / str(t.number) / "samples.png").exists()


def test_rerun_resumes_and_best_writes_json(tiny_study, home):
    cwd, _ = tiny_study
    r = gentune_here("tune", *TINY, "--trials", "4", "--study", "tiny", home=home, cwd=cwd)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{cwd / 'runs/tiny/study.db'}")
    assert len([t for t in study.trials if t.state.is_finished()]) == 4
    r = gentune("best", "--study", "tiny", "-o", "b.json", home=home, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert json.loads((cwd / "b.json").read_text())["study"] == "tiny"


def test_changed_settings_are_refused(tiny_study, home):
    cwd, _ = tiny_study
    r = gentune(
        "tune",
        "--dataset",
        "digits",
        "--steps",
        "300",
        "--n-eval",
        "200",
        "--study",
        "tiny",
        home=home,
        cwd=cwd,
    )
    assert r.returncode == 2
    assert "steps=150" in r.stderr and "steps=300" in r.stderr and "--study NAME" in r.stderr


def test_sample_loads_checkpoint_or_retrains_identically(tiny_study, home):
    cwd, _ = tiny_study
    r = gentune_here("sample", "--study", "tiny", "--n", "50", "-o", "a.npy", home=home, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "checkpoint" in r.stdout  # read, not retrained
    a = np.load(cwd / "a.npy")
    assert a.shape == (50, 8, 8) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    best = json.loads((cwd / "runs/tiny/best.json").read_text())["trial"]
    ckpt = cwd / "runs" / "tiny" / "trials" / str(best) / "generator.pt"
    ckpt.rename(ckpt.with_suffix(".bak"))
    r = gentune_here("sample", "--study", "tiny", "--n", "50", "-o", "b.npy", home=home, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert "retrained" in r.stdout and ckpt.exists()  # the retrained generator is kept
    np.testing.assert_allclose(np.load(cwd / "b.npy"), a, atol=1e-5)
    torch.load(ckpt, weights_only=True)


def test_grid_loss_objective_warns_and_records_metrics(home, tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text("mode: replace\nparams:\n  lr: [1.0e-3, 1.0e-4]\n  batch_size: [32, 64]\n")
    # 150 steps is too short for a healthy GAN: the failure detectors would stop most points.
    r = gentune_here(
        "tune",
        *TINY[:2],
        "--steps",
        "50",  # 4 grid points: what is checked is which points ran and what they recorded
        "--n-eval",
        "200",
        "--strategy",
        "grid",
        "--space",
        str(space),
        "--objective",
        "loss",
        "--detectors",
        "off",
        "--study",
        "g",
        "--no-report",
        home=home,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "does not measure sample quality" in r.stderr
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'runs/g/study.db'}")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted((t.params["lr"], t.params["batch_size"]) for t in done) == sorted(
        (lr, bs) for lr in (1e-3, 1e-4) for bs in (32, 64)
    )
    for t in done:  # the value is the loss, and the sample metrics are still recorded
        assert t.value == pytest.approx(t.user_attrs["final_loss"]["g"])
        assert t.user_attrs["metrics"]["fid"] >= 0


def test_tutorial_optuna_code_runs_unchanged(home, tmp_path):
    r = gentune_here(
        "tune",
        "--objective-fn",
        str(ROOT / "examples" / "tutorial_optuna.py") + ":objective",
        "--trials",
        "1",  # the tutorial's train_gan is 1500 steps a trial; a second trial runs the same code
        "--study",
        "tut",
        "--no-report",
        home=home,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="tut", storage=f"sqlite:///{tmp_path / 'runs/tut/study.db'}")
    assert [set(t.params) for t in study.trials] == [{"learning_rate", "batch_size"}]
    assert (tmp_path / "runs" / "tut" / "best.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["tune", "--model", "vae9"], "unknown model"),
        (["tune", "--dataset", "cifar"], "unknown dataset"),
        (["tune", "--strategy", "anneal"], "unknown strategy"),
        (["tune", "--objective", "is"], "unknown objective"),
        (["tune", "--steps", "10", "--epochs", "1"], "not both"),
        (["best", "--study", "nope"], "no study 'nope'"),
        (["tune", "--device", "tpu"], "device must be"),
    ],
)
def test_bad_names_exit_2_with_the_valid_choices(args, words, home, tmp_path):
    r = gentune(*args, home=home, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", ["tune", "worker", "best", "sample", "report"])
def test_every_command_has_help(cmd, home, tmp_path):
    r = gentune(cmd, "--help", home=home, cwd=tmp_path)
    assert r.returncode == 0 and "Usage" in r.stdout


def test_help_keeps_the_defaults_written_in_the_text(home, tmp_path):
    # rich reads "[default: ...]" inside a help text as markup and drops it
    out = " ".join(gentune("tune", "--help", home=home, cwd=tmp_path, env={"COLUMNS": "300"}).stdout.split())
    assert "(default: 20; grid: the grid size)" in out
    assert "(default: MODEL-DATASET-STRATEGY-OBJECTIVE, with the budget" in out


def test_unlabelled_user_images_say_which_features_are_used(home, tmp_path):
    from sklearn.datasets import load_digits

    images = (load_digits().images * (255 / 16)).astype(np.uint8)  # (1797, 8, 8), no labels
    np.save(tmp_path / "mine.npy", images)
    r = gentune_here(
        "tune",
        "--dataset",
        "files",
        "--data-dir",
        str(tmp_path / "mine.npy"),
        "--steps",
        "100",
        "--n-eval",
        "100",
        "--trials",
        "1",
        "--detectors",
        "off",
        "--study",
        "mine",
        "--no-report",
        home=home,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "features: autoencoder" in r.stdout and "note:" in r.stdout
    best = json.loads((tmp_path / "runs" / "mine" / "best.json").read_text())
    assert best["metrics"]["label_entropy"] is None and best["extractor"]["kind"] == "autoencoder"


def test_create_makes_a_study_for_workers_and_runs_no_trial(home, tmp_path):
    r = gentune("create", *TINY, "--trials", "2", "--study", "made", home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "gentune worker made --storage sqlite:///runs/made/study.db" in r.stdout
    study = optuna.load_study(study_name="made", storage=f"sqlite:///{tmp_path}/runs/made/study.db")
    assert study.trials == [] and study.user_attrs["target_trials"] == 2
    assert study.user_attrs["gentune"]["steps"] == 150 and "floor" in study.user_attrs  # workers reuse it
    r = gentune(
        "worker",
        "--study",
        "made",
        "--storage",
        "sqlite:///runs/made/study.db",
        "--trials",
        "1",
        "--no-progress",
        home=home,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert [t.state for t in study.trials] in ([TrialState.COMPLETE], [TrialState.PRUNED])
    # A worker's own K is for a population study; this one trains a trial at a time.
    bad = gentune(
        "worker",
        "made",
        "--storage",
        "sqlite:///runs/made/study.db",
        "--population",
        "4",
        home=home,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "--population K is for a study made with --population" in bad.stderr
    # The phases belong to tune; --trials 0 is no longer a way to create a study.
    bad = gentune("create", *TINY, "--study", "x", "--confirm", "2", home=home, cwd=tmp_path)
    assert bad.returncode == 2 and "gentune create runs no phase" in bad.stderr
    bad = gentune("tune", *TINY, "--study", "x", "--trials", "0", home=home, cwd=tmp_path)
    assert bad.returncode == 2 and "--trials must be an integer >= 1" in bad.stderr
    assert not (tmp_path / "runs" / "x").exists()  # a refused run leaves nothing behind
