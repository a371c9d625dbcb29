"""Values that were accepted silently or crashed (issue 14, items 17-18): each is refused where the
settings are made (gentune.settings), so the API and the CLI give the same message, and a
refused command exits 2 and leaves nothing behind."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from gentune.api import Budget, EarlyStop, Phases, RunOptions, SearchOptions
from gentune.cli import main
from gentune.errors import GentuneError
from gentune.settings import MAX_SEED, DatasetRef, TuneRequest

QUAD = Path(__file__).resolve().parent / "objectives" / "slow_quadratic.py"


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run `gentune ARGS` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gentune", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], "--steps must be an integer >= 1 (got 0)"),
        (["--trials", "0"], "--trials must be an integer >= 1 (got 0)"),
        (["--trials", "-1"], "--trials must be an integer >= 1 (got -1)"),
        (["--timeout", "-1"], "--timeout must be a finite number of seconds > 0 (got -1.0)"),
        (["--timeout", "nan"], "--timeout must be a finite number of seconds > 0 (got nan)"),
        (["--evals", "-1"], "--evals must be an integer >= 0 (got -1)"),
        (["--eval-every", "0"], "--eval-every must be an integer >= 1 (got 0)"),
        (["--eval-samples", "64"], "--eval-samples must be an integer above 64"),
        (["--patience", "0"], "--patience must be an integer >= 1"),
        (["--workers", "0"], "--workers must be an integer >= 1 (got 0)"),
        (["--threads", "0"], "--threads must be an integer >= 1 (got 0)"),
        (["--seed", "-1"], f"--seed must be an integer from 0 to {MAX_SEED} (got -1)"),
        (["--seed", str(2**32)], "--seed must be an integer from 0"),
        (["--n-eval", "10"], "--n-eval must be an integer above 64, the feature dimension"),
        (["--direction", "maximize"], "--direction applies to your own --objective-fn only"),
        (["--confirm-seeds", "0"], "--confirm-seeds must be an integer >= 1"),
    ],
)
def test_a_bad_value_is_refused_with_exit_2_and_leaves_nothing(args, words, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, err = cli(monkeypatch, capsys, "tune", "--dataset", "digits", "--study", "v", *args)
    assert code == 2, err
    assert words in err and ("Fix: pass" in err or "Fix: drop" in err)
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no runs/v/study.db from a refused run


@pytest.mark.parametrize(
    "args, words",
    [
        (["--threads", "0"], "--threads must be an integer >= 1 (got 0)"),
        (["--timeout", "-5"], "--timeout must be a finite number of seconds > 0"),
        (["--trials", "0"], "--trials must be an integer >= 1"),
    ],
)
def test_a_worker_refuses_bad_values_before_it_opens_the_study(args, words, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/none.db"
    code, err = cli(monkeypatch, capsys, "worker", "--study", "s", "--storage", url, *args)
    assert code == 2 and words in err
    assert list(tmp_path.iterdir()) == []


def test_the_api_gives_the_same_refusals():
    with pytest.raises(GentuneError, match="--timeout must be a finite number"):
        SearchOptions(timeout=math.inf)
    with pytest.raises(GentuneError, match="--seed must be an integer"):
        SearchOptions(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(GentuneError, match="--evals must be an integer >= 0"):
        EarlyStop(evals=-1)
    with pytest.raises(GentuneError, match="--workers must be an integer >= 1"):
        RunOptions(workers=0)
    with pytest.raises(GentuneError, match="--gpus must be an integer >= 0"):
        RunOptions(gpus=[-1])
    with pytest.raises(GentuneError, match="--narrow-top must be an integer >= 1"):
        Phases(narrow_top=0)
    with pytest.raises(GentuneError, match="--n-eval must be an integer above 64"):
        TuneRequest(dataset=DatasetRef("digits"), n_eval=64)
    with pytest.raises(GentuneError, match="--steps must be an integer >= 1"):
        Budget(steps=0)
    # what stays valid
    SearchOptions(seed=MAX_SEED, timeout=0.5)
    EarlyStop(evals=0)
    Phases(confirm=0)
    TuneRequest(n_eval=65)


def test_a_runs_folder_that_cannot_be_written_is_refused_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("")
    code, err = cli(
        monkeypatch, capsys, "tune", "--objective-fn", f"{QUAD}:objective", "--runs-dir", "afile/runs"
    )
    assert code == 2 and "--runs-dir afile/runs cannot hold the study's outputs" in err
    assert "afile is not a folder" in err


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(__import__("os"), "geteuid"), reason="POSIX")
def test_a_read_only_runs_folder_is_refused_before_training(monkeypatch, capsys, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    monkeypatch.chdir(tmp_path)
    Path("ro").mkdir(mode=0o555)
    try:
        code, err = cli(
            monkeypatch, capsys, "tune", "--objective-fn", f"{QUAD}:objective", "--runs-dir", "ro/runs"
        )
    finally:
        Path("ro").chmod(0o755)
    assert code == 2 and "ro is not writable" in err and "make ro writable" in err
    assert list(Path("ro").iterdir()) == []
