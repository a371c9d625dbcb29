"""gentune.settings: every default and every resolution, tested on its own (no storage, no training)."""

from __future__ import annotations

import pytest

from gentune.errors import GentuneError, StudyError
from gentune.families import get_family
from gentune.search.space import CategoricalSpec, SearchSpace
from gentune.settings import (
    DEFAULT_EVALS,
    DEFAULT_STEPS,
    DEFAULT_TRIALS,
    Budget,
    DatasetRef,
    EarlyStop,
    SearchOptions,
    StudySettings,
    TuneRequest,
    UserSettings,
    check_objective,
    check_same_settings,
    default_study_name,
    resolve_settings,
    target_trials,
)

GAN = get_family("gan-mlp")
SPACE = SearchSpace({"lr": 1e-3})


def resolve(stored=None, family=GAN, **request):
    return resolve_settings(TuneRequest(**request), stored, family, SPACE)


def test_a_new_study_gets_every_default_from_one_place():
    s = resolve()
    assert (s.model, s.dataset, s.strategy, s.objective) == ("gan-mlp", "digits", "tpe", "fid")
    assert (s.pruner, s.evals, s.patience, s.eval_every) == ("median", DEFAULT_EVALS, None, None)
    assert s.detectors is not None and s.space == SPACE.to_dict() and s.seed == 0
    assert s.steps == GAN.default_steps["digits"] and s.budget_for(GAN) == {"steps": s.steps}
    grid = resolve(search=SearchOptions(strategy="grid"))
    assert grid.pruner == "none"  # a grid measures every point it lists


def test_resolution_is_pure_and_repeatable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve() == resolve()
    assert list(tmp_path.iterdir()) == []  # no file, no folder, no database


def test_a_family_default_budget_is_stored_and_a_given_one_wins():
    dcgan = get_family("dcgan")
    assert resolve(model="dcgan", family=dcgan).steps == dcgan.default_steps["digits"]
    assert resolve(model="dcgan", family=dcgan, budget=Budget(steps=7)).steps == 7
    s = resolve(budget=Budget(epochs=2.5, trial_seconds=30))
    assert (s.steps, s.epochs, s.trial_seconds) == (None, 2.5, 30)
    assert s.budget_for(GAN) == {"epochs": 2.5}
    assert StudySettings(dataset="files:x").budget_for() == {"steps": 3000}  # the fallback


def test_a_resumed_study_keeps_its_steps_when_the_default_changed():
    """gan-mlp's digits default went from 3000 (stored as None) to 1000 (stored): a study made
    before keeps training 3000 steps when the same command reruns it, and accepts --steps 3000."""
    legacy = StudySettings(dataset="digits", space=SPACE.to_dict())
    assert legacy.budget_for(GAN) == {"steps": DEFAULT_STEPS["digits"]} == {"steps": 3000}
    resumed = resolve(stored=legacy.to_dict())
    assert resumed.steps is None and resumed.budget_for(GAN) == {"steps": 3000}
    check_same_settings("old", legacy, resolve(stored=legacy.to_dict(), budget=Budget(steps=3000)))
    with pytest.raises(StudyError, match="steps=3000.*steps=1000"):
        check_same_settings("old", legacy, resolve(budget=Budget(steps=1000)))
    stored_new = resolve().to_dict()
    assert resolve(stored=stored_new).steps == 1000


def test_unset_early_stop_fields_take_what_the_study_stored():
    stored = {"pruner": "hyperband", "patience": 2, "evals": 3, "eval_every": None, "eval_samples": 100}
    s = resolve(stored=stored)
    assert (s.pruner, s.patience, s.evals, s.eval_samples) == ("hyperband", 2, 3, 100)
    assert s.detectors is None  # stored before detectors existed: off, as it ran
    given = resolve(stored=stored, early_stop=EarlyStop(pruner="median", detectors="off"))
    assert given.pruner == "median" and given.detectors is not None and given.patience == 2


def test_the_objective_defaults_by_data_kind_and_is_checked_against_the_family():
    text = resolve_settings(
        TuneRequest(model="transformer", dataset=DatasetRef("text")),
        None,
        get_family("transformer", "text"),
        SPACE,
    )
    assert text.objective == "nll"
    with pytest.raises(GentuneError, match="--objective nll does not apply to --model gan-mlp"):
        check_objective(GAN, "image", "nll")
    with pytest.raises(GentuneError, match="unknown objective"):
        check_objective(GAN, "image", "psnr")
    with pytest.raises(GentuneError, match="models image data"):
        check_objective(GAN, "text", None, "text")


@pytest.mark.parametrize(
    "budget, message",
    [
        (dict(steps=0), "--steps must be an integer >= 1"),
        (dict(steps=1.5), "--steps must be an integer >= 1"),
        (dict(steps=10, epochs=1.0), "steps or as epochs, not both"),
        (dict(epochs=float("nan")), "--epochs must be a finite number > 0"),
        (dict(trial_seconds=0), "--trial-seconds must be a positive number"),
    ],
)
def test_a_bad_budget_names_the_rule_and_the_fix(budget, message):
    with pytest.raises(GentuneError, match=message) as e:
        Budget(**budget)
    assert "Fix:" in str(e.value)


def test_target_trials():
    grid = SearchSpace(
        {"lr": CategoricalSpec(choices=[1e-3, 1e-4]), "batch_size": CategoricalSpec(choices=[32, 64, 128])}
    )
    assert target_trials("tpe", None, grid) == DEFAULT_TRIALS
    assert target_trials("grid", None, grid) == 6 and target_trials("grid", 4, grid) == 4
    assert target_trials("grid", 50, grid) == 6
    with pytest.raises(GentuneError, match="--trials must be an integer >= 1"):
        target_trials("tpe", 0, grid)


def test_dataset_labels_and_study_names():
    ref = DatasetRef("files", "/data/my faces")
    assert ref.label == "files:my faces" and DatasetRef.parse(ref.label).name == "files"
    assert DatasetRef("mnist", "/somewhere").label == "mnist"  # a local copy is the same data
    # A study name is a folder name: the space of the folder's name becomes "_" (check_study_name).
    assert default_study_name("gan-mlp", ref.label, "tpe", "fid") == "gan-mlp-files-my_faces-tpe-fid"


def test_a_resumed_study_must_ask_for_what_it_stored():
    check_same_settings("s", StudySettings(steps=5), StudySettings(steps=5))
    with pytest.raises(StudyError, match=r"exists with steps=5, but this command asks for steps=6"):
        check_same_settings("s", StudySettings(steps=5), StudySettings(steps=6))
    # A user's objective may move with its checkout; its direction may not change.
    a, b = UserSettings(objective_fn="/old/f.py:f"), UserSettings(objective_fn="/new/f.py:f")
    check_same_settings("u", a, b)
    with pytest.raises(StudyError, match="direction='minimize'.*direction='maximize'"):
        check_same_settings("u", a, UserSettings(direction="maximize"))


def test_settings_stored_by_gentune_0_1_still_read():
    stored = {
        "version": "0.1.0",
        "model": "gan-mlp",
        "dataset": "digits",
        "strategy": "tpe",
        "objective": "fid",
        "steps": None,
        "seed": 0,
        "space": {},
        "direction": "minimize",
        "budget": {"steps": 3000},
    }
    s = StudySettings.from_dict(stored)
    assert s.pruner == "none" and s.evals == 0 and s.budget_for(GAN) == {"steps": 3000}


def test_studies_named_before_the_naming_rule_still_open_but_none_leaves_runs():
    from gentune.settings import check_existing_study_name, check_study_name

    old = "gan-mlp-files-my faces-tpe-fid"  # the default name of a folder with a space, before 0.2
    assert check_existing_study_name(old) == old
    with pytest.raises(GentuneError, match="contains ' '"):
        check_study_name(old)  # a new study gets a valid name
    for bad in ("../x", "/abs", "..", ".", "a\0b", "a\\b"):
        with pytest.raises(GentuneError, match="the study name"):
            check_existing_study_name(bad)
