"""gentune.Recorder: a user's own training loop records what a built-in trial records.

examples/own_gan_loop.py (a plain-PyTorch GAN, no gentune family) runs under run_objective with
a tiny budget; its trials hold the metrics, the floor and the grids, and the report reads them.
The Recorder's numbers equal a built-in trial's on the same generator's samples.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import pytest
import torch

import gentune
from gentune import Budget, EarlyStop, RunOptions, SearchOptions
from gentune.families import get_family
from gentune.report.extract import extract_study
from gentune.trial import attrs

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
SPACE = "mode: narrow\nparams:\n  width: 32\n  depth: 1\n  optimizer: adam\n  d_steps: 1\n"


@pytest.fixture(scope="module")
def own_study(tmp_path_factory) -> optuna.Study:
    """Two trials of the example's own GAN loop, 100 steps each, one report at step 50."""
    spec = importlib.util.spec_from_file_location("own_gan_loop", ROOT / "examples" / "own_gan_loop.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    runs = tmp_path_factory.mktemp("own")
    example.STEPS, example.EVAL_EVERY = 100, 50  # the example's budget, cut for the test
    example.RUNS = str(runs)
    result = gentune.run_objective(
        example.objective,
        study="own-gan",
        search=SearchOptions(trials=2),
        run=RunOptions(runs_dir=runs, report=False, progress=False),
    )
    study = result.study
    study.storage_url = f"sqlite:///{runs / 'own-gan' / 'study.db'}"  # for write_report
    return study


def test_own_loop_trials_hold_what_builtin_trials_hold(own_study):
    trials = own_study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    floor = attrs.floor(own_study)
    assert floor is not None and floor["n"] == 1000 and 0 < floor["fid"]
    assert attrs.extractor(own_study)["kind"] == "classifier" and attrs.real_png(own_study)
    for t in trials:
        metrics = attrs.metrics(t)
        assert metrics is not None and metrics["n"] == 1000
        assert t.value == metrics["fid"] and metrics["fid"] > floor["fid"]
        assert {"kid", "precision", "recall", "label_entropy", "classes_covered"} <= metrics.keys()
        assert attrs.samples_png(t)
        assert [f["step"] for f in attrs.samples_progress(t)] == [50, 100]  # the report, then the final
        assert t.intermediate_values.keys() == {50, 100} and t.intermediate_values[100] == t.value
        assert attrs.steps(t) == 100
        grids = optuna.artifacts.get_all_artifact_meta(t, storage=own_study._storage)
        names = ["samples.png", "samples_step_000050.png", "samples_step_000100.png"]
        assert sorted(m.filename for m in grids) == names  # as a built-in trial's


def test_the_report_reads_an_own_loop_study(own_study, tmp_path):
    from gentune.report import write_report

    data = extract_study(own_study)
    assert data.floor["fid"] == attrs.floor(own_study)["fid"]
    assert [t.metrics["fid"] for t in data.trials] == [t.values[0] for t in data.trials]
    assert all(t.samples_png and len(t.samples_progress) == 2 for t in data.trials)
    html = write_report(own_study.storage_url, own_study.study_name, tmp_path / "report.html")[0].read_text()
    assert f"{data.floor['fid']:.3g}" in html or f"{data.floor['fid']:.3f}" in html


def test_recorder_numbers_equal_the_builtin_trials(tmp_path):
    """A built-in trial's stored metrics, and the Recorder's on the same generator's samples."""
    (tmp_path / "space.yaml").write_text(SPACE)
    result = gentune.tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=60),
        search=SearchOptions(trials=1, space=str(tmp_path / "space.yaml")),
        early_stop=EarlyStop(evals=0, detectors=False, pruner="none"),
        run=RunOptions(runs_dir=tmp_path / "runs", report=False, progress=False, device="cpu"),
    )
    builtin = result.study.best_trial
    family = get_family("gan-mlp")
    _, model, _ = family.load(result.out_dir / "trials" / "0" / "generator.pt")

    def sample(n, seed):
        return (family.sample(model, n, seed=seed) + 1) / 2

    mine = optuna.create_study()
    trial = mine.ask()
    rec = gentune.Recorder(trial, dataset="digits", n=200, device="cpu", artifacts=tmp_path / "mine")
    value = rec.finish(sample, step=60)
    assert [m.filename for m in optuna.artifacts.get_all_artifact_meta(trial)] == ["samples.png"]
    assert value == pytest.approx(builtin.value, rel=1e-5)
    stored = attrs.metrics(trial)
    for key, expected in attrs.metrics(builtin).items():
        assert stored[key] == pytest.approx(expected, rel=1e-5, abs=1e-7), key
    assert attrs.samples_png(trial) == attrs.samples_png(builtin)  # the same fixed-seed grid
    assert attrs.floor(mine) == attrs.floor(result.study)


def test_recorder_prunes_a_diverged_generator():
    study = optuna.create_study()
    trial = study.ask()
    rec = gentune.Recorder(trial, dataset="digits", n=200, device="cpu")
    with pytest.raises(optuna.TrialPruned):
        rec.report(10, lambda n, seed: torch.full((n, 1, 8, 8), float("nan")))
    assert attrs.prune_reason(trial) == "diverged" and attrs.steps(trial) == 10


def test_recorder_in_a_multi_objective_study_only_watches(digits):
    study = optuna.create_study(directions=["minimize", "maximize"])
    trial = study.ask()
    rec = gentune.Recorder(trial, dataset="digits", n=200, device="cpu", metric="fid")
    real = (digits.train.x[:200] + 1) / 2
    assert rec.report(10, real) == pytest.approx(rec.finish(real, step=20))  # the same images
    assert attrs.metrics(trial)["n"] == 200 and len(attrs.samples_progress(trial)) == 2
    study.tell(trial, [attrs.metrics(trial)["fid"], attrs.metrics(trial)["recall"]])
    assert study.trials[0].intermediate_values == {}
