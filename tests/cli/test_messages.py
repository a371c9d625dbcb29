"""What gentune prints and writes (issue 14, items 14, 17 and 19): user text stays plain, every
mistake is one message with exit code 2, and outputs are what they say they are.

Most commands run in this process (`cli`), which is fast; the GAN study behind the `sample`
tests trains once per module (100 steps on digits).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import optuna
import pytest
from rich.console import Console

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, run_objective, tune
from gentune.cli import main
from gentune.errors import GentuneError, SpaceError, StudyError
from gentune.progress import TrialProgress
from gentune.search.space import SearchSpace, load_space_file
from gentune.study import sampling
from gentune.study.storage import check_journal

pytestmark = pytest.mark.usefixtures("one_thread")
OBJECTIVES = Path(__file__).resolve().parents[1] / "objectives"
BAD = OBJECTIVES / "misbehaving.py"


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `gentune ARGS` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gentune", *args])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- 14: user text is printed as plain text ---------------------------------------------------


def test_the_error_printer_keeps_brackets(monkeypatch, capsys):
    def fails(**kwargs):
        raise GentuneError(
            "psycopg[binary] is missing for study [/x]",
            value="[/x]",
            fix="pip install 'gentune[postgres]', and pick one of [adam, sgd]",
        )

    monkeypatch.setattr("gentune.cli.app", fails)
    code, _, err = cli(monkeypatch, capsys)
    assert code == 2
    assert "error: psycopg[binary] is missing for study [/x] (got '[/x]')" in err
    assert "pip install 'gentune[postgres]', and pick one of [adam, sgd]" in err


def test_a_space_hint_keeps_its_brackets(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text("params:\n  lr: {type: float, low: 1.0e-4}\n")
    code, _, err = cli(monkeypatch, capsys, "tune", "--space", "s.yaml", "--study", "s")
    assert code == 2 and "{type: categorical, choices: [adam, sgd]}" in err


def test_choices_and_errors_with_brackets_print_through_phases_and_best(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(
        monkeypatch,
        capsys,
        "tune",
        "--objective-fn",
        f"{BAD}:brackets",
        "--trials",
        "2",
        "--stages",
        "opt:x",
        "--screen-trials",
        "3",
        "--study",
        "b",
        "--no-report",
    )
    assert code == 0, err
    assert "stage 2/2: tuning ['x'], fixed {'opt': '[/x]'}" in err  # the shorter choice wins
    code, out, err = cli(monkeypatch, capsys, "best", "--study", "b-stage2")
    assert code == 0, err  # was a MarkupError on every call
    assert "[/x]" in out


@pytest.mark.parametrize("terminal", [False, True])
def test_the_progress_display_prints_brackets_and_counts_only_finished_trials(terminal):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=200)
    with TrialProgress(2, console=console) as bar:
        bar.trial_started(0, {"opt": "[/x]"})
        bar.trial_finished(0, "complete", 1.0, 1.0, 0)
        bar.trial_started(1, {"opt": "[adam, sgd]"})
        bar.trial_finished(1, "fail", None, 1.0, 0, " (ValueError: bad [/x])")
        bar.trial_started(2, {"opt": "[/x]"})
        bar.trial_finished(2, "complete", 2.0, 1.0, 0)
    text = buffer.getvalue()
    assert "trial 1 failed: value=- (ValueError: bad [/x])  |  1/2 done" in text
    assert "2/2 done" in text and "3/2" not in text
    if not terminal:
        assert "started: {'opt': '[adam, sgd]'}" in text


def test_the_workers_reporter_prints_plain_text(capsys):
    from gentune.study.workers import _Reporter

    study = optuna.create_study()
    with _Reporter(True, study, 2, "value") as reporter:
        reporter.note("trial 3 failed ([/x] in [adam, sgd])")
    assert "trial 3 failed ([/x] in [adam, sgd])" in capsys.readouterr().err


def test_a_failed_trial_is_one_line_without_optunas_traceback(monkeypatch, capfd, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["gentune", "tune", "--objective-fn", f"{BAD}:fails_on_odd"])
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--trials", "2", "--study", "f", "--no-report"])
    main()
    err = capfd.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("trial 1 failed"))
    assert "(ValueError: bad value [/x] for [" in line and "misbehaving.py line" in line
    assert "1/2 done" in line
    assert "Traceback" not in err and "failed with parameters" not in err
    assert "2/2 done" in err and "3/2" not in err


# -- 17: a message instead of a traceback ------------------------------------------------------


def test_a_corrupted_journal_is_named_with_its_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    quad = f"{OBJECTIVES / 'slow_quadratic.py'}:objective"
    monkeypatch.setenv("SLOW_SECONDS", "0")
    code, _, err = cli(
        monkeypatch, capsys, "tune", "--objective-fn", quad, "--trials", "2", "--storage", "j.log"
    )
    assert code == 0, err  # a sound journal runs, and resumes
    code, _, err = cli(
        monkeypatch, capsys, "tune", "--objective-fn", quad, "--trials", "3", "--storage", "j.log"
    )
    assert code == 0, err
    lines = Path("j.log").read_bytes().splitlines(keepends=True)
    lines[2] = b"garbage\n"
    Path("j.log").write_bytes(b"".join(lines))
    code, _, err = cli(
        monkeypatch, capsys, "tune", "--objective-fn", quad, "--trials", "4", "--storage", "j.log"
    )
    assert code == 2 and "Traceback" not in err
    assert f"the journal file j.log is corrupted: line 3 of {len(lines)} is not a complete JSON record" in err
    # a record cut short by a crash, with nothing after it, is refused too (Optuna would glue
    # the next record to it)
    Path("cut.log").write_bytes(b'{"op_code": 0, "worker_id": "x"')
    with pytest.raises(StudyError, match="line 1 of 1 is not a complete JSON record"):
        check_journal(Path("cut.log"), settle_seconds=0.01)


def test_a_syntax_error_in_the_users_file_names_the_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("mine.py").write_text("def objective(trial):\n    return (trial.suggest_float('x', 0, 1)\n")
    code, _, err = cli(monkeypatch, capsys, "tune", "--objective-fn", "mine.py:objective", "--study", "m")
    assert code == 2 and "Traceback" not in err
    assert "mine.py line 2 is not valid Python" in err and "correct the syntax at mine.py line 2" in err
    assert not Path("runs").exists()


# -- the built-in study behind sample and the checkpoint's mode ----------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A one-trial MLP GAN study on digits ("tiny"), its checkpoint written under umask 022."""
    runs = tmp_path_factory.mktemp("runs")
    old = os.umask(0o022)
    try:
        tune(
            dataset="digits",
            n_eval=200,
            budget=Budget(steps=100),
            search=SearchOptions(trials=1),
            early_stop=EarlyStop(evals=0, detectors="off"),
            run=RunOptions(runs_dir=runs, study="tiny", report=False, progress=False),
        )
    finally:
        os.umask(old)
    return runs


def sample(monkeypatch, capsys, built, cwd, *args):
    monkeypatch.chdir(cwd)
    return cli(monkeypatch, capsys, "sample", "--study", "tiny", "--runs-dir", str(built), *args)


def test_a_checkpoint_is_readable_like_the_other_outputs(built):
    trial = built / "tiny" / "trials" / "0"
    assert (trial / "generator.pt").stat().st_mode & 0o777 == 0o644  # mkstemp made it 0600
    assert (trial / "samples.png").stat().st_mode & 0o777 == 0o644


def test_sample_writes_the_format_its_name_says_and_reports_the_real_path(
    monkeypatch, capsys, built, tmp_path
):
    code, out, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "30", "-o", "name")
    assert code == 0, err
    assert "wrote 30 samples to name.npy (checkpoint" in out  # it said "to name"
    a = np.load("name.npy")
    assert a.shape == (30, 8, 8) and a.dtype == np.float32
    code, out, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "30", "-o", "s.npz")
    assert code == 0, err and "to s.npz" in out
    np.testing.assert_array_equal(np.load("s.npz")["x"], a)
    code, out, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "30", "-o", "grid.png")
    assert code == 0, err and "to grid.png" in out
    assert Path("grid.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("name.npy", "s.npz", "grid.png"):
        assert Path(name).stat().st_mode & 0o777 == 0o666 & ~_umask()
    code, _, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "30", "-o", "s.jpg")
    assert code == 2 and "the samples file must end in .npy" in err and "Fix: pass -o s.npy" in err
    code, _, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "10001", "-o", "big.png")
    assert code == 2 and "a PNG grid holds at most 10,000 samples" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "name.npy", "s.npz"]


def test_sample_draws_in_chunks_and_refuses_what_the_disk_cannot_hold(monkeypatch, capsys, built, tmp_path):
    from gentune.families.gan import GanMlp

    calls: list[tuple[int, int]] = []
    real = GanMlp.sample

    def spy(self, model, n, *, seed, **kw):
        calls.append((n, seed))
        return real(self, model, n, seed=seed, **kw)

    monkeypatch.setattr(GanMlp, "sample", spy)
    monkeypatch.setattr(sampling, "CHUNK", 7)
    code, _, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "20", "-o", "c.npy")
    assert code == 0, err
    sizes, seeds = zip(*calls)
    assert sizes == (7, 7, 6)  # memory holds one chunk, whatever --n is
    assert seeds[0] == 0 and len(set(seeds)) == 3  # each chunk draws latents of its own
    chunked = np.load("c.npy")
    assert chunked.shape == (20, 8, 8)
    code, _, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "7", "-o", "one.npy")
    np.testing.assert_array_equal(np.load("one.npy"), chunked[:7])  # the first chunk is the seed's

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    code, _, err = sample(monkeypatch, capsys, built, tmp_path, "--n", "10000000", "-o", "huge.npy")
    assert code == 2 and "Traceback" not in err
    assert "10,000,000 samples take 2.6 GB, but . has 0.0 GB free" in err and "about 3,906 fit here" in err
    assert not Path("huge.npy").exists() and not list(tmp_path.glob(".huge*"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- 19: best.json is strict JSON; space files say what is wrong ------------------------------------


def test_best_json_holds_no_infinity(monkeypatch, capsys, tmp_path):
    def diverged(trial):
        trial.set_user_attr("final_loss", {"g": float("inf"), "d": float("nan")})
        return trial.suggest_float("x", 0, 1)

    run_objective(
        diverged,
        study="inf",
        search=SearchOptions(trials=1),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    )

    def strict(text: str) -> dict:
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))

    assert strict((tmp_path / "inf" / "best.json").read_text())["final_loss"] == {"g": None, "d": None}
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(monkeypatch, capsys, "best", "--study", "inf", "--runs-dir", ".", "-o", "b.json")
    assert code == 0, err
    assert strict(Path("b.json").read_text())["final_loss"]["g"] is None


def test_a_space_file_with_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-3}\n  lr: [1.0e-3]\n")
    with pytest.raises(SpaceError, match="gives the key 'lr' twice in one table \\(lines 2 and 3\\)"):
        load_space_file(path, SearchSpace())
    path.write_text("params:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-3, low: 0.1}\n")
    with pytest.raises(SpaceError, match="'low' twice"):
        load_space_file(path, SearchSpace())
    toml = tmp_path / "s.toml"
    toml.write_text("[params]\nlr = [0.1]\nlr = [0.2]\n")
    with pytest.raises(SpaceError, match="not valid TOML"):
        load_space_file(toml, SearchSpace())


@pytest.mark.parametrize(
    "params, words",
    [
        (
            "optimizer: [sgd]\n  beta1: {type: float, low: 0, high: 0.9, when: {optimizer: [adam]}}",
            "params.beta1.when.optimizer: optimizer never takes one of these values, so beta1 would "
            "never be tuned (got ['adam']). Fix: use values optimizer can take: ['sgd']",
        ),
        (
            "beta1: {type: float, low: 0, high: 0.9, when: {optimiser: [adam]}}",
            "beta1 depends on optimiser, which is not in the space",
        ),
        (
            "beta1: {type: float, low: 0, high: 0.9, when: {optimizer: [adam]}}\n  optimizer: [adam]",
            "optimizer comes after beta1 in the space",
        ),
        (
            "depth: {type: int, low: 1, high: 3}\n  width: {type: int, low: 8, high: 64, when: {depth: [4]}}",
            "use values depth can take: 1 to 3",
        ),
    ],
)
def test_an_impossible_condition_is_refused(params, words, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(f"mode: replace\nparams:\n  {params}\n")
    with pytest.raises(SpaceError) as e:
        load_space_file(path, SearchSpace())
    assert words in str(e.value) and str(e.value).startswith("s.yaml: params.")


def test_narrowing_a_default_condition_away_is_allowed_and_a_files_own_is_checked(tmp_path):
    from gentune.families import default_space, get_family

    default = default_space(get_family("gan-mlp"), "image")
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  optimizer: [sgd, rmsprop]\n")  # the default beta1 is simply not tuned
    assert "beta1" not in load_space_file(path, default).suggest(optuna.create_study().ask())
    path.write_text(
        "params:\n  optimizer: [sgd]\n  beta1: {type: float, low: 0, high: 0.9, when: {optimizer: [adam]}}\n"
    )
    with pytest.raises(SpaceError, match="optimizer never takes one of these values, so beta1"):
        load_space_file(path, default)
