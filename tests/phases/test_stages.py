"""Tuning in phases: stepwise stages, range narrowing and confirmation over seeds, end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_here import gentune_here
from optuna.trial import TrialState

from gentune.api import Budget, EarlyStop, Phases, RunOptions, SearchOptions, tune
from gentune.errors import GentuneError, SpaceError
from gentune.phases.stages import parse_stages, split_groups, stage_space
from gentune.search.defaults import gan_mlp_space
from gentune.search.narrow import describe, narrow_space
from gentune.search.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

optuna.logging.set_verbosity(optuna.logging.WARNING)
TINY = ["--steps", "60", "--n-eval", "200", "--no-report", "--strategy", "random"]
# The default space reaches 256-wide, 3-deep networks with 3 D steps: 40 s for 200 steps on a
# busy core. These tests check the phases, not the models, so the networks stay small and the
# budget short: which trials each phase runs and what it stores do not depend on their scores.
SMALL = "mode: narrow\nparams:\n  width: [32, 64]\n  depth: [1]\n"


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def _cli(tmp_path, *args):
    space = str(tmp_path / "small.yaml")
    done = gentune_here("tune", "--runs-dir", str(tmp_path), *TINY, "--space", space, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _load(tmp_path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/{name}/study.db")


def test_stage_lists_parse_and_bad_ones_name_the_fix():
    assert parse_stages("auto") == 2 and parse_stages("3") == 3
    assert parse_stages("lr,batch_size:beta1, d_steps") == [["lr", "batch_size"], ["beta1", "d_steps"]]
    for bad in ("lr,batch_size", "lr::beta1", "lr:lr", "1"):
        with pytest.raises(GentuneError, match="--stages"):
            parse_stages(bad)
    assert split_groups(list("abcde"), 2) == [["a", "b", "c"], ["d", "e"]]
    assert split_groups(list("ab"), 3) == [["a"], ["b"]]


def test_a_stage_space_fixes_winners_and_holds_later_groups_at_defaults():
    base = gan_mlp_space()
    defaults = {
        "lr": 2e-4,
        "batch_size": 64,
        "optimizer": "adam",
        "beta1": 0.9,
        "width": 128,
        "depth": 2,
        "weight_decay": 0.0,
        "d_steps": 1,
    }
    s = stage_space(base, ["beta1", "d_steps"], {"lr": 1e-3, "batch_size": 50}, defaults)
    assert set(s.tuned()) == {"beta1", "d_steps"}
    assert s.fixed() == {
        "lr": 1e-3,
        "batch_size": 50,
        "optimizer": "adam",
        "width": 128,
        "depth": 2,
        "weight_decay": 0.0,
    }
    # beta1 exists only for adam/adamw: the optimizer, held at its default, keeps it active.
    trial = optuna.create_study().ask()
    assert "beta1" in s.suggest(trial)


def test_narrowing_shrinks_numeric_ranges_around_the_top_trials():
    space = SearchSpace(
        {
            "lr": FloatSpec(low=1e-5, high=1e-2, log=True),
            "batch_size": IntSpec(low=32, high=128),
            "optimizer": CategoricalSpec(choices=["adam", "sgd"]),
            "beta1": FloatSpec(low=0.0, high=0.9),
            "width": 128,
        }
    )
    top = [
        {"lr": 1e-4, "batch_size": 60, "optimizer": "adam", "beta1": 0.5},
        {"lr": 4e-4, "batch_size": 70, "optimizer": "sgd", "beta1": 0.5},
    ]
    new = narrow_space(space, top)
    lr = new.params["lr"]
    # On the log scale: span log(4) padded by a quarter on each side, clipped to the old range.
    assert math.log(lr.high / lr.low) == pytest.approx(1.5 * math.log(4))
    assert lr.low < 1e-4 and lr.high > 4e-4 and lr.log
    assert (new.params["batch_size"].low, new.params["batch_size"].high) == (55, 75)
    # Where the top trials agree, a minimum pad of 5% of the old range remains.
    assert new.params["beta1"].low == pytest.approx(0.455) and new.params["beta1"].high == pytest.approx(
        0.545
    )
    assert new.params["optimizer"] == space.params["optimizer"] and new.params["width"] == 128
    edge = narrow_space(space, [{"lr": 1e-5, "batch_size": 128}])
    assert edge.params["lr"].low == 1e-5 and edge.params["batch_size"].high == 128
    assert any(line.startswith("lr: [1e-05, 0.01] -> ") for line in describe(space, new))
    with pytest.raises(SpaceError, match="at least one finished trial"):
        narrow_space(space, [])


def test_stages_end_to_end_on_digits(tmp_path, small):
    done = _cli(
        tmp_path,
        "--study",
        "st",
        "--trials",
        "2",
        "--detectors",
        "off",
        "--pruner",
        "none",
        "--stages",
        "lr,batch_size:beta1,d_steps",
    )
    s1, s2 = _load(tmp_path, "st-stage1"), _load(tmp_path, "st-stage2")
    link1, link2 = s1.user_attrs["stage"], s2.user_attrs["stage"]
    assert link1["tuned"] == ["lr", "batch_size"] and link1["previous"] is None
    assert link2["tuned"] == ["beta1", "d_steps"] and link2["previous"] == "st-stage1"
    best1 = s1.best_trial
    assert link2["fixed"] == {"lr": best1.params["lr"], "batch_size": best1.params["batch_size"]}
    for t in s2.trials:
        assert set(t.params) <= {"beta1", "d_steps"}
        assert t.user_attrs["config"]["lr"] == best1.params["lr"]
    for t in s1.trials:  # stage 1 holds the later group at the config defaults
        assert set(t.params) == {"lr", "batch_size"} and t.user_attrs["config"]["d_steps"] == 1
    assert "stage 2/2: tuning ['beta1', 'd_steps']" in done.stderr
    assert link2["winner"]["study"] in ("st-stage1", "st-stage2")


def test_stages_auto_orders_parameters_by_a_screening_run(tmp_path, small):
    r = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=60),
        search=SearchOptions(strategy="random", trials=1, space=small),
        early_stop=EarlyStop(pruner="none", detectors="off"),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False, study="au"),
        phases=Phases(stages="auto", screen_trials=3),
    )
    screen = _load(tmp_path, "au-screen")
    assert len(screen.trials) == 3 and screen.user_attrs["gentune"]["strategy"] == "random"
    importance = list(optuna.importance.get_param_importances(screen))
    s1 = _load(tmp_path, "au-stage1").user_attrs["stage"]
    s2 = r.study.user_attrs["stage"]
    tuned = SearchSpace.from_dict(screen.user_attrs["gentune"]["space"]).tuned()
    assert s1["tuned"] + s2["tuned"] == importance + [p for p in tuned if p not in importance]
    assert len(s1["tuned"]) >= len(s2["tuned"])


def test_narrowing_end_to_end_on_digits(tmp_path, small):
    done = _cli(
        tmp_path,
        "--study",
        "nr",
        "--trials",
        "3",
        "--detectors",
        "off",
        "--pruner",
        "none",
        "--narrow",
        "--narrow-top",
        "2",
        "--narrow-trials",
        "2",
    )
    first, second = _load(tmp_path, "nr"), _load(tmp_path, "nr-narrow")
    stored = SearchSpace.from_dict(second.user_attrs["narrowed_space"])
    assert first.user_attrs["narrowed_space"] == second.user_attrs["narrowed_space"]
    assert second.user_attrs["gentune"]["space"] == second.user_attrs["narrowed_space"]
    origin = second.user_attrs["narrowed_from"]
    assert origin["study"] == "nr" and origin["top_k"] == 2
    old = gan_mlp_space()
    for name, spec in stored.tuned().items():
        if isinstance(spec, (FloatSpec, IntSpec)):
            assert old.params[name].low <= spec.low <= spec.high <= old.params[name].high
    assert stored.params["lr"].high / stored.params["lr"].low < 1e-2 / 1e-5
    carried = second.trials[0]
    assert carried.user_attrs["carried_from"] == f"nr#{first.best_trial.number}"
    assert carried.params == first.best_trial.params and carried.value == pytest.approx(first.best_value)
    assert len(second.trials) == 2 and "narrowed the space around the top 2 trials" in done.stderr
    assert "lr: [1e-05, 0.01] -> [" in done.stderr


def test_confirm_reruns_the_top_configurations_and_best_shows_mean_and_sd(tmp_path, small):
    _cli(
        tmp_path,
        "--study",
        "cf",
        "--trials",
        "3",
        "--detectors",
        "off",
        "--pruner",
        "none",
        "--confirm",
        "2",
        "--confirm-seeds",
        "1",
    )
    confirm = _load(tmp_path, "cf-confirm")
    assert [t.state for t in confirm.trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.user_attrs["seed"] for t in confirm.trials) == [1, 1]
    best = json.loads((tmp_path / "cf" / "best.json").read_text())
    ranking = best["confirmed"]["ranking"]
    assert len(ranking) == 2 and all(r["n"] == 2 and len(r["values"]) == 2 for r in ranking)
    assert ranking[0]["mean"] <= ranking[1]["mean"]
    pick = best["confirmed"]["best"]
    assert pick["sd"] == pytest.approx(abs(pick["values"][0] - pick["values"][1]) / math.sqrt(2))
    shown = subprocess.run(
        [sys.executable, "-m", "gentune", "best", "--study", "cf", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0 and "pick by mean" in shown.stdout and "±" in shown.stdout


def test_confirm_after_an_auto_search_reruns_each_family_it_names(tmp_path):
    (tmp_path / "small.yaml").write_text(
        "mode: narrow\nparams:\n  model: [gan-mlp, vae]\n  gan-mlp.width: [64]\n  gan-mlp.depth: [1]\n"
        "  vae.arch: [mlp]\n  vae.width: [128]\n  vae.depth: [1]\n"
    )
    _cli(
        tmp_path,
        "--model",
        "auto",
        "--study",
        "ac",
        "--trials",
        "4",
        "--detectors",
        "off",
        "--pruner",
        "none",
        "--confirm",
        "2",
        "--confirm-seeds",
        "1",
    )
    search, confirm = _load(tmp_path, "ac"), _load(tmp_path, "ac-confirm")
    ranked = sorted((t for t in search.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)[:2]
    assert [t.state for t in confirm.trials] == [TrialState.COMPLETE] * 2
    by_source = {t.user_attrs["confirm_of"]: t for t in confirm.trials}
    for t in ranked:
        rerun = by_source[f"ac#{t.number}"]
        assert rerun.user_attrs["family"] == t.user_attrs["family"]
        assert rerun.user_attrs["config"] == t.user_attrs["config"]


def test_a_user_objective_gets_stages_narrowing_and_confirmation(tmp_path):
    """--objective-fn: the screen gives the ranges, stages fix what they do not tune, the
    narrowed phase draws inside the narrowed ranges, and re-runs are seeded."""
    fn = Path(__file__).parents[1] / "objectives" / "noisy_quadratic.py"
    cmd = [
        "tune",
        "--objective-fn",
        f"{fn}:objective",
        "--study",
        "u",
        "--runs-dir",
        str(tmp_path),
        "--strategy",
        "random",
        "--trials",
        "4",
        "--stages",
        "lr:width,optimizer",
        "--screen-trials",
        "6",
        "--narrow",
        "--narrow-top",
        "2",
        "--narrow-trials",
        "3",
        "--confirm",
        "2",
        "--confirm-seeds",
        "1",
    ]
    done = gentune_here(*cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    screen, s1, s2 = _load(tmp_path, "u-screen"), _load(tmp_path, "u-stage1"), _load(tmp_path, "u-stage2")
    narrowed, confirm = _load(tmp_path, "u-stage2-narrow"), _load(tmp_path, "u-stage2-narrow-confirm")
    start = screen.best_trial.params
    # Stage 1 tunes lr; width and optimizer stay at the screen's best values.
    assert {t.params["width"] for t in s1.trials} == {start["width"]}
    assert {t.params["optimizer"] for t in s1.trials} == {start["optimizer"]}
    assert len({t.params["lr"] for t in s1.trials}) == 4
    # Stage 2 fixes the stage-1 winner's lr and tunes the rest.
    lr = s2.user_attrs["stage"]["fixed"]["lr"]
    assert {t.params["lr"] for t in s2.trials} == {lr}
    # The narrowed phase draws lr, width inside the stored narrowed ranges.
    space = SearchSpace.from_dict(narrowed.user_attrs["narrowed_space"])
    assert len(narrowed.trials) == 3
    for t in narrowed.trials:
        for name in ("lr", "width"):
            spec = space.params[name]
            if isinstance(spec, (FloatSpec, IntSpec)):
                assert spec.low <= t.params[name] <= spec.high
    # Confirmation: each top configuration once more under seed 1; the same parameters,
    # a different draw of the noise.
    assert sorted(t.user_attrs["seed"] for t in confirm.trials) == [1, 1]
    ranking = confirm.user_attrs["confirmed"]
    for r in ranking:
        assert r["n"] == 2 and r["seeds"] == [0, 1] and r["values"][0] != r["values"][1]
        assert abs(r["values"][0] - r["values"][1]) < 0.2
    assert "pick by mean" in done.stdout
