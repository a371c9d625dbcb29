"""Experiment trackers as Optuna callbacks: each finished trial logged where a team already looks.

`MLflowTracker(uri)` is what `gentune tune --mlflow URI` (and `gentune worker --mlflow URI`)
attaches: one MLflow run per finished trial, in an experiment named after the study, with the
trial's sampled parameters, its value, its metrics (the flat ones: fid, kid, precision, ...),
its learning curve (the intermediate values, by G step) and its sample grid as the image
artifact `samples.png`. optuna-integration's MLflowCallback logs parameters and values only,
hence this one. In the Python API pass it, or any Optuna callback, as
`tune(..., callbacks=[MLflowTracker(uri)])`.

MLflow is imported only when a tracker is made (`pip install 'gentune[mlflow]'`): it takes
seconds to import. A trial that cannot be logged (the tracking server went away) is a warning:
the study goes on, and `gentune report` still has everything.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import GentuneError
from gentune.extras import require
from gentune.trial import attrs

GRID_NAME = "samples.png"
_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its runs' files: beside a SQLite tracking database, else
    MLflow's default (the server's artifact root, or ./mlruns).

    >>> artifact_location("sqlite:////tmp/t/mlflow.db")
    'file:///tmp/t/mlartifacts'
    >>> artifact_location("http://mlflow:5000") is None
    True
    """
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def trial_record(study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
    """What a tracker logs of `trial`: {params, metrics, curve, tags, grid (PNG bytes or None)}.

    Metrics are the trial's value (`value`, or one per objective by the study's metric names),
    the finite numbers of its `metrics` and its training time; `curve` is its intermediate
    values by step.
    """
    metrics: dict[str, float] = {}
    if trial.values is not None:
        names = study.metric_names or (
            ["value"] if len(trial.values) == 1 else [f"value_{i}" for i in range(len(trial.values))]
        )
        metrics.update(zip(names, map(float, trial.values)))
    metrics.update(attrs.flat_metrics(attrs.metrics(trial) or {}))
    seconds = attrs.train_seconds(trial)
    if seconds is not None:
        metrics["train_seconds"] = seconds
    tags = {"optuna.study": study.study_name, "optuna.trial": str(trial.number), "state": trial.state.name}
    for key, value in (
        ("family", attrs.family(trial)),
        ("prune_reason", attrs.prune_reason(trial)),
        ("error", attrs.error(trial)),
    ):
        if value:
            tags[key] = value[:5000]  # MLflow's limit on a tag's value
    grid = None
    encoded = attrs.samples_png(trial)
    if encoded:
        try:
            grid = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            grid = None
    return {
        "params": dict(trial.params),
        "metrics": metrics,
        "curve": dict(trial.intermediate_values),
        "tags": tags,
        "grid": grid,
    }


class MLflowTracker:
    """An Optuna callback logging each finished trial as one MLflow run (see the module doc).

    `experiment`: the MLflow experiment's name (default: the study's name).
    """

    def __init__(self, tracking_uri: str, experiment: str | None = None):
        mlflow = require("mlflow", "--mlflow")
        self.uri, self.experiment = tracking_uri, experiment
        self.client = mlflow.MlflowClient(tracking_uri)
        self._entities = require("mlflow.entities", "--mlflow")
        self._experiments: dict[str, str] = {}
        try:  # a URI MLflow cannot use is a message now, not a warning after each trial
            self.client.search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - MLflow raises many kinds; each is the same mistake
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GentuneError(
                f"--mlflow: MLflow cannot use the tracking URI {tracking_uri}: {first}",
                value=tracking_uri,
                fix="pass sqlite:///PATH/mlflow.db (a local database) or http://HOST:PORT (an MLflow server)",
            ) from None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        try:
            self.log(study, trial)
        except Exception as e:  # noqa: BLE001 - the study matters more than its copy in MLflow
            warnings.warn(f"trial {trial.number} was not logged to MLflow ({self.uri}): {e}", stacklevel=2)

    def log(self, study: optuna.Study, trial: FrozenTrial) -> str:
        """Log `trial` as a new run of the study's experiment; the run's id."""
        e = self._entities
        record = trial_record(study, trial)
        start = _millis(trial.datetime_start)
        end = _millis(trial.datetime_complete) or int(time.time() * 1000)
        run = self.client.create_run(
            self._experiment_id(self.experiment or study.study_name),
            start_time=start or end,
            tags=record["tags"],
            run_name=f"trial-{trial.number}",
        )
        run_id = run.info.run_id
        metrics = [e.Metric(k, v, end, 0) for k, v in record["metrics"].items()]
        metrics += [e.Metric("intermediate_value", float(v), end, int(s)) for s, v in record["curve"].items()]
        params = [e.Param(k, str(v)[:6000]) for k, v in record["params"].items()]
        self.client.log_batch(run_id, metrics=metrics, params=params)
        if record["grid"] is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / GRID_NAME
                path.write_bytes(record["grid"])
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=_STATUS.get(trial.state, "FAILED"), end_time=end)
        return run_id

    def _experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self._experiments[name] = self.client.create_experiment(
                        name, artifact_location=artifact_location(self.uri)
                    )
                except Exception:  # another worker created it first
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
            if found is not None:
                self._experiments[name] = found.experiment_id
        return self._experiments[name]


def _millis(when: Any) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)
