"""The dashboards people use, on one tiny `gentune tune --mlflow URI --artifacts DIR` run: sample
grids as Optuna artifacts that optuna-dashboard serves, metrics as flat attributes, and one
MLflow run per trial with its parameters, metrics and grid."""

from __future__ import annotations

import base64
import os
import sys
import threading
import urllib.request
import warnings

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta
from optuna.trial import TrialState
from typer.testing import CliRunner

from gentune.cli import app
from gentune.errors import GentuneError
from gentune.study.dashboard import dashboard_server
from gentune.trial.artifacts import ARTIFACTS_ENV, FINAL_NAME, GridUploader, artifact_dir, step_name

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 60
SMALL = "mode: narrow\nparams:\n  lr: [0.0002, 0.0005]\n  width: [64]\n  depth: [2]\n  batch_size: [64]\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """One small trial of 60 steps, evaluated once during training and once at the end."""
    root = tmp_path_factory.mktemp("dash")
    (root / "small.yaml").write_text(SMALL)
    args = ["tune", "--dataset", "digits", "--steps", str(STEPS), "--n-eval", "200", "--trials", "1"]
    args += ["--strategy", "random", "--space", str(root / "small.yaml"), "--evals", "1"]
    args += ["--pruner", "none", "--detectors", "off", "--no-report", "--study", "art"]
    args += ["--runs-dir", str(root / "runs"), "--artifacts", str(root / "shared")]
    args += ["--mlflow", f"sqlite:///{root / 'mlflow.db'}"]
    done = CliRunner().invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert ARTIFACTS_ENV not in os.environ  # --artifacts held for the run only
    study = optuna.load_study(study_name="art", storage=f"sqlite:///{root / 'runs' / 'art' / 'study.db'}")
    return study, root


def _artifacts(study: optuna.Study, trial) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {m.filename: m.artifact_id for m in get_all_artifact_meta(trial, storage=study._storage)}


def _complete(study: optuna.Study):
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert trials
    return trials


def test_each_grid_is_an_artifact_with_the_stored_png(tiny):
    study, root = tiny
    store = FileSystemArtifactStore(root / "shared")
    assert not (root / "runs" / "art" / "artifacts").exists()  # --artifacts chose the folder
    for t in _complete(study):
        found = _artifacts(study, t)
        frames = {step_name(f["step"]): f["png"] for f in t.user_attrs["samples_progress"]}
        assert len(frames) == 2 and step_name(STEPS) in frames  # one during training, the final one
        assert set(found) == {FINAL_NAME, *frames}, t.number
        with store.open_reader(found[FINAL_NAME]) as f:
            assert f.read() == base64.b64decode(t.user_attrs["samples_png"])
        for name, png in frames.items():
            with store.open_reader(found[name]) as f:
                assert f.read() == base64.b64decode(png)


def test_metrics_are_also_flat_numeric_attributes(tiny):
    study, _ = tiny
    for t in _complete(study):
        metrics = t.user_attrs["metrics"]
        for name in ("fid", "kid", "precision", "recall", "n"):
            assert t.user_attrs[name] == metrics[name], name
        assert t.value == t.user_attrs["fid"]


def test_optuna_dashboard_serves_a_trials_grid(tiny):
    study, root = tiny
    t = _complete(study)[0]
    artifact_id = _artifacts(study, t)[FINAL_NAME]
    url = f"sqlite:///{root / 'runs' / 'art' / 'study.db'}"
    server, page = dashboard_server("art", url, root / "shared", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert page == f"http://127.0.0.1:{port}/dashboard/studies/{study._study_id}"
        address = f"http://127.0.0.1:{port}/artifacts/{study._study_id}/{t._trial_id}/{artifact_id}"
        with urllib.request.urlopen(address, timeout=30) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.read() == base64.b64decode(t.user_attrs["samples_png"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_mlflow_holds_one_run_per_trial_with_params_metrics_and_grid(tiny):
    from mlflow import MlflowClient

    study, root = tiny
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("art")
    runs = {int(r.data.tags["optuna.trial"]): r for r in client.search_runs([experiment.experiment_id])}
    trials = study.get_trials()
    assert set(runs) == {t.number for t in trials}
    for t in _complete(study):
        run = runs[t.number]
        assert run.info.status == "FINISHED" and run.info.run_name == f"trial-{t.number}"
        assert run.data.params == {k: str(v) for k, v in t.params.items()}
        assert run.data.metrics["value"] == pytest.approx(t.value)
        assert run.data.metrics["fid"] == pytest.approx(t.user_attrs["fid"])
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["samples.png"]
        grid = client.download_artifacts(run.info.run_id, "samples.png", str(root))
        assert open(grid, "rb").read() == base64.b64decode(t.user_attrs["samples_png"])


def test_missing_extras_name_the_pip_line(tmp_path, monkeypatch):
    from gentune.study.trackers import MLflowTracker

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import now fails as if absent
    with pytest.raises(GentuneError) as info:
        dashboard_server("art", f"sqlite:///{tmp_path / 'x.db'}", tmp_path, "127.0.0.1", 0)
    assert str(info.value) == (
        "gentune dashboard needs the optional package optuna-dashboard. Fix: pip install 'gentune[dashboard]'"
    )
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(GentuneError, match=r"--mlflow needs .* pip install 'gentune\[mlflow\]'"):
        MLflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_the_dashboard_command_says_what_is_missing(tiny, monkeypatch):
    _, root = tiny
    runs = str(root / "runs")
    with pytest.raises(GentuneError, match="no study 'nope' in"):
        CliRunner().invoke(
            app,
            ["dashboard", "nope", "--storage", f"sqlite:///{root / 'runs' / 'art' / 'study.db'}"],
            catch_exceptions=False,
        )
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    with pytest.raises(GentuneError, match=r"pip install 'gentune\[dashboard\]'"):
        CliRunner().invoke(
            app, ["dashboard", "art", "--runs-dir", runs, "--port", "0"], catch_exceptions=False
        )


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
