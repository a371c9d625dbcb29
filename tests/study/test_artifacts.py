"""Sample grids as Optuna artifacts and metrics as flat attributes, for optuna-dashboard."""

from __future__ import annotations

import base64
import warnings

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState

from gentune import Budget, EarlyStop, RunOptions, SearchOptions, tune
from gentune.search.space import SearchSpace
from gentune.trial.artifacts import ARTIFACTS_ENV, FINAL_NAME, GridUploader, artifact_dir, step_name

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 60
SMALL = SearchSpace.from_dict({"lr": [2e-4, 5e-4], "width": 64, "depth": 2, "batch_size": 64})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """One small trial of 60 steps, evaluated once during training and once at the end."""
    runs = tmp_path_factory.mktemp("runs")
    result = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=STEPS),
        search=SearchOptions(strategy="random", trials=1, seed=0, space=SMALL),
        early_stop=EarlyStop(evals=1, pruner="none", detectors="off"),
        run=RunOptions(runs_dir=runs, study="art", progress=False, report=False),
    )
    return result, runs


def _artifacts(study: optuna.Study, trial) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {m.filename: m.artifact_id for m in get_all_artifact_meta(trial, storage=study._storage)}


def test_each_grid_is_an_artifact_with_the_stored_png(tiny):
    result, runs = tiny
    store = FileSystemArtifactStore(runs / "art" / "artifacts")
    for t in result.study.get_trials(states=(TrialState.COMPLETE,)):
        found = _artifacts(result.study, t)
        frames = {step_name(f["step"]): f["png"] for f in t.user_attrs["samples_progress"]}
        assert len(frames) == 2 and step_name(STEPS) in frames  # one during training, the final one
        assert set(found) == {FINAL_NAME, *frames}, t.number
        with store.open_reader(found[FINAL_NAME]) as f:
            assert f.read() == base64.b64decode(t.user_attrs["samples_png"])
        for name, png in frames.items():
            with store.open_reader(found[name]) as f:
                assert f.read() == base64.b64decode(png)


def test_metrics_are_also_flat_numeric_attributes(tiny):
    result, _ = tiny
    for t in result.study.get_trials(states=(TrialState.COMPLETE,)):
        metrics = t.user_attrs["metrics"]
        for name in ("fid", "kid", "precision", "recall", "n"):
            assert t.user_attrs[name] == metrics[name], name
        assert t.value == t.user_attrs["fid"]


def test_the_store_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    assert artifact_dir(tmp_path / "s") == tmp_path / "s" / "artifacts"
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path / "shared"))
    assert artifact_dir(tmp_path / "s") == tmp_path / "shared"


def test_a_folder_that_cannot_be_written_warns_once_and_the_trial_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    grids = GridUploader(blocker / "artifacts")
    trial = optuna.create_study().ask()
    with pytest.warns(UserWarning, match="not stored as artifacts") as caught:
        assert grids.upload(trial, b"png", FINAL_NAME) is None
        assert grids.upload(trial, b"png", step_name(10)) is None
    assert len([w for w in caught if "artifacts" in str(w.message)]) == 1
