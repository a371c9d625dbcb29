"""Study identity and the CLI (issue 13): reruns that have nothing to run, --more, a budget in
the default name, --force-new, sample's formats, one way to name a study, --version, list,
the help's panels, and a `best` that loads no torch.

Commands run in this process (`gentune`), except where a fresh interpreter is the point. The
user objective is a quadratic (no model); the GAN studies train one trial of 50 steps, or none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from cli_here import gentune_here
from PIL import Image

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, create, tune
from gentune.phases.search import BuiltinSearch
from gentune.settings import DatasetRef, TuneRequest
from gentune.version import __version__

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
QUADRATIC = f"{ROOT / 'tests' / 'objectives' / 'noisy_quadratic.py'}:objective"
GAN = ["--dataset", "digits", "--steps", "60", "--n-eval", "200"]


def gentune(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run `gentune ARGS` in this process, in folder `cwd`: (exit code, stdout, stderr)."""
    done = gentune_here(*args, cwd=cwd, env={"COLUMNS": "200"})
    return done.returncode, done.stdout, done.stderr


def ok(cwd: Path, *args: str) -> str:
    code, out, err = gentune(cwd, *args)
    assert code == 0, out + err
    return out


def load(cwd: Path, name: str, folder: str | None = None) -> optuna.Study:
    db = cwd / "runs" / (folder or name) / "study.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def finished(study: optuna.Study) -> int:
    return sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials)


@pytest.fixture(scope="module")
def quad(tmp_path_factory) -> Path:
    """Study `q`: 2 trials of the quadratic, run through the CLI."""
    cwd = tmp_path_factory.mktemp("quad")
    ok(cwd, "tune", "--objective-fn", QUADRATIC, "--trials", "2", "--study", "q", "--no-report")
    return cwd


@pytest.fixture(scope="module")
def gan(tmp_path_factory) -> Path:
    """Study `g`: one MLP GAN trial of 50 steps on digits, with its checkpoint."""
    runs = tmp_path_factory.mktemp("gan") / "runs"
    tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=50),
        search=SearchOptions(trials=1),
        early_stop=EarlyStop(evals=0, detectors="off"),
        run=RunOptions(runs_dir=runs, study="g", report=False, progress=False),
    )
    return runs.parent


# -- 1: a rerun with nothing to run says so; --more K ---------------------------------------


def test_a_rerun_of_a_complete_study_says_so_and_more_adds_trials(quad):
    again = ["tune", "--objective-fn", QUADRATIC, "--study", "q", "--no-report"]
    out = ok(quad, *again, "--trials", "2")
    assert "study q already holds 2 of 2 finished trials: nothing to run" in out
    assert "--more 10" in out and "--trials 2" not in out.split("nothing to run")[1].splitlines()[0]
    out = ok(quad, *again, "--more", "2")
    assert finished(load(quad, "q")) == 4 and "nothing to run" not in out
    code, _, err = gentune(quad, *again, "--more", "1", "--trials", "5")
    assert code == 2 and "--more adds trials to those the study holds, --trials sets their total" in err
    code, _, err = gentune(quad, *again, "--more", "1", "--narrow")
    assert code == 2 and "--more adds trials to one study" in err
    assert finished(load(quad, "q")) == 4


# -- 2: the budget in the default name; a named study's changed budget; --force-new ---------


def builtin_name(request: TuneRequest, run: RunOptions) -> str:
    """The study `gentune tune` and `gentune.tune()` both run for `request` (the CLI names it so)."""
    return BuiltinSearch(request, run).name


def test_a_changed_budget_gets_a_name_of_its_own(tmp_path):
    request = TuneRequest(dataset=DatasetRef("digits"), budget=Budget(steps=500))
    run = RunOptions(runs_dir=tmp_path / "runs")
    assert builtin_name(request, run) == "gan-mlp-digits-tpe-fid-steps500"
    default = TuneRequest(dataset=DatasetRef("digits"))
    assert builtin_name(default, run) == "gan-mlp-digits-tpe-fid"  # users' runs/ folders keep theirs
    same = TuneRequest(dataset=DatasetRef("digits"), budget=Budget(steps=1000))  # the default budget
    assert builtin_name(same, run) == "gan-mlp-digits-tpe-fid"
    before = TuneRequest(dataset=DatasetRef("digits"), budget=Budget(steps=3000))  # the earlier default
    assert builtin_name(before, run) == "gan-mlp-digits-tpe-fid-steps3000"
    other = TuneRequest(dataset=DatasetRef("digits"), n_eval=200, budget=Budget(epochs=2, trial_seconds=30))
    assert builtin_name(other, run) == "gan-mlp-digits-tpe-fid-epochs2-30s-n200"
    assert builtin_name(request, RunOptions(study="mine")) == "mine"


def test_changed_budget_under_a_name_is_refused_with_the_choice_and_force_new_moves_it_aside(tmp_path):
    ok(tmp_path, "create", *GAN, "--trials", "1")  # made under today's name, as before
    assert load(tmp_path, "gan-mlp-digits-tpe-fid-steps60-n200").user_attrs["gentune"]["steps"] == 60
    # The Python API names a study of the same budget as the CLI did, and so opens that one.
    api = create(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=60),
        search=SearchOptions(trials=1),
        run=RunOptions(runs_dir=tmp_path / "runs", progress=False, report=False),
    )
    assert api.study_name == "gan-mlp-digits-tpe-fid-steps60-n200"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [api.study_name]
    # A study that an older gentune made under the plain default name with this budget is
    # resumed under that name, not started again under the new one.
    ok(tmp_path, "create", *GAN, "--steps", "70", "--trials", "1", "--study", "gan-mlp-digits-tpe-fid")
    out = ok(tmp_path, "create", *GAN, "--steps", "70", "--trials", "1")
    assert "created study gan-mlp-digits-tpe-fid " in out
    code, _, err = gentune(tmp_path, "create", *GAN, "--steps", "80", "--study", "gan-mlp-digits-tpe-fid")
    assert code == 2 and "steps=70" in err and "steps=80" in err
    assert "--study NAME" in err and "--force-new" in err and "nothing is deleted" in err
    out = ok(tmp_path, "create", *GAN, "--steps", "80", "--study", "gan-mlp-digits-tpe-fid", "--force-new")
    aside = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("gan-mlp-digits-tpe-fid.old-")]
    assert len(aside) == 1
    assert f"moved runs/gan-mlp-digits-tpe-fid/ aside to runs/{aside[0].name}/ (nothing is deleted)" in out
    assert load(tmp_path, "gan-mlp-digits-tpe-fid").user_attrs["gentune"]["steps"] == 80
    old = load(tmp_path, "gan-mlp-digits-tpe-fid", aside[0].name)  # kept whole, under its name
    assert old.user_attrs["gentune"]["steps"] == 70
    listed = ok(tmp_path, "list")
    assert f"gan-mlp-digits-tpe-fid (in runs/{aside[0].name})" in listed
    db = "sqlite:///runs/gan-mlp-digits-tpe-fid/study.db"  # a database of its own: not moved
    code, _, err = gentune(
        tmp_path,
        "create",
        *GAN,
        "--steps",
        "80",
        "--study",
        "gan-mlp-digits-tpe-fid",
        "--storage",
        db,
        "--force-new",
    )
    assert code == 2 and "which gentune does not change" in err and "--study NEW_NAME" in err


# -- 3 and 4: sample's formats; STUDY or --study in every command ------------------------------


def test_sample_writes_a_png_grid_or_arrays_named_either_way(gan):
    out = ok(gan, "sample", "g", "--n", "30", "-o", "grid.png", "--device", "cpu")
    assert "wrote 30 samples to grid.png" in out
    with Image.open(gan / "grid.png") as img:
        img.load()
        # 30 digits of 8x8 in a 6 x 5 grid, 1 pixel apart, enlarged 4 times (28-pixel cells)
        assert img.format == "PNG" and img.size == ((6 * 9 + 1) * 4, (5 * 9 + 1) * 4)
    assert not (gan / "grid.png.npy").exists()
    ok(gan, "sample", "--study", "g", "--n", "30", "-o", "a.npy", "--device", "cpu")
    ok(gan, "sample", "g", "--study", "g", "--n", "30", "-o", "a.npz", "--device", "cpu")
    a = np.load(gan / "a.npy")
    assert a.shape == (30, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(np.load(gan / "a.npz")["x"], a)


def test_every_command_takes_the_study_as_an_argument_or_as_study(quad):
    storage = "sqlite:///runs/q/study.db"
    for args in (["q"], ["--study", "q"], ["q", "--study", "q"]):
        assert "best trial" in ok(quad, "best", *args)
        assert "wrote runs/q/report.html" in ok(quad, "report", *args)
    for args in (["q"], ["--study", "q"]):
        before = finished(load(quad, "q"))
        ok(quad, "worker", *args, "--storage", storage, "--trials", str(before + 1), "--no-progress")
        assert finished(load(quad, "q")) == before + 1
    for command in ("best", "sample", "report", "worker", "dashboard"):
        code, _, err = gentune(quad, command, "q", "--study", "r", "--storage", storage)
        assert code == 2 and "named twice, as STUDY and as --study" in err, command
        code, _, err = gentune(quad, command, "--storage", storage)
        assert code == 2 and "name the study" in err, command
        where = ["--storage", storage] if command == "worker" else []  # a worker needs the URL
        code, _, err = gentune(quad, command, "--study", "nosuch", *where)  # taken, and looked up
        assert code == 2 and "'nosuch'" in err and "Traceback" not in err, command


# -- 5, 6, 7, 8: --version, list, the help's panels, a best that loads no torch ----------------


def test_tune_help_groups_its_options_in_panels_and_tells_the_eval_options_apart(tmp_path):
    code, out, _ = gentune(tmp_path, "tune", "--help")
    assert code == 0
    titles = [line.split("─")[1].strip() for line in out.splitlines() if line.startswith("╭─")]
    assert titles == [
        "Options",
        "Data and model",
        "Budget: trials, and each trial's training and final score",
        "Search",
        "Early stopping: scores during training, pruning, failure detectors",
        "Phases after the search",
        "Parallel: devices, processes, populations",
        "Study and outputs",
    ]
    panel_of = {}
    for line in out.splitlines():
        if line.startswith("╭─"):
            title = line.split("─")[1].strip()
        words = line.strip("│ ").split()
        if words and words[0].startswith("--"):  # an option's row, not a wrapped help line
            panel_of[words[0]] = title
    assert panel_of["--steps"] == panel_of["--n-eval"] == panel_of["--more"] == titles[2]
    assert panel_of["--evals"] == panel_of["--eval-every"] == panel_of["--eval-samples"] == titles[4]
    assert panel_of["--workers"] == titles[6] and panel_of["--force-new"] == titles[7]
    text = " ".join(out.split())
    assert "The scores during training use --eval-samples" in text  # --n-eval
    assert "--n-eval is the final score's" in text  # --eval-samples
    assert "instead of --evals times" in text  # --eval-every


def test_version(tmp_path):
    code, out, _ = gentune(tmp_path, "--version")
    assert code == 0 and out.strip() == f"gentune {__version__}"


def test_list_shows_each_study_with_its_trials_best_value_and_state(quad, tmp_path):
    runs = quad / "runs"
    # a study whose target is above what it holds, and that no process runs: interrupted
    ok(quad, "create", "--objective-fn", QUADRATIC, "--study", "p", "--trials", "3")
    ok(quad, "worker", "p", "--storage", "sqlite:///runs/p/study.db", "--trials", "1", "--no-progress")
    lines = ok(quad, "list", "--runs-dir", str(runs)).splitlines()
    assert lines[0].split() == [
        "STUDY",
        "MODEL/DATA",
        "TRIALS",
        "COMPLETE",
        "PRUNED",
        "FAILED",
        "RUNNING",
        "BEST",
        "STATE",
    ]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    q = load(quad, "q")
    target = q.user_attrs["target_trials"]
    assert rows["p"] == [
        "p",
        "user",
        "1/3",
        "1",
        "0",
        "0",
        "0",
        "value",
        f"{load(quad, 'p').best_value:.4g}",
        "interrupted",
    ]
    assert rows["q"][2] == f"{finished(q)}/{target}" and rows["q"][-1] == "finished"
    assert rows["q"][-2] == f"{q.best_value:.4g}"
    by_url = ok(quad, "list", "--storage", "sqlite:///runs/p/study.db").splitlines()
    assert [line.split()[0] for line in by_url[1:]] == ["p"]
    assert ok(tmp_path, "list").strip() == "no study in runs/"


def test_best_and_list_load_no_torch_and_best_writes_a_file_only_when_asked(quad):
    (quad / "runs" / "q" / "best.json").unlink(missing_ok=True)
    code = (
        "import sys; from gentune.cli import main\n"
        "for args in (['best', 'q', '-o', 'b.json'], ['list']):\n"
        "    sys.argv = ['gentune', *args]\n"
        "    try:\n        main()\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], cwd=quad, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "best trial" in r.stdout and "wrote b.json" in r.stdout and "STUDY" in r.stdout
    assert json.loads((quad / "b.json").read_text())["study"] == "q"
    ok(quad, "best", "q")
    assert not (quad / "runs" / "q" / "best.json").exists()  # nothing written without -o
