"""gentune.load and TuneResult.best_model: the README's example as written, a study's trial by
name, a checkpoint file, a trial retrained when its checkpoint is gone, and the refusals."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

import gentune
from gentune import Budget, EarlyStop, RunOptions
from gentune.errors import GentuneError
from gentune.trial import attrs
from gentune.trial.objective import EVAL_SEED

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- python-api-example -->"
SPACE = "mode: narrow\nparams:\n  width: 32\n  depth: 1\n  optimizer: adam\n  d_steps: 1\n"
N = 200


def readme_example() -> str:
    """The Python block that follows MARKER in README.md."""
    after = (ROOT / "README.md").read_text().split(MARKER, 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def readme(tmp_path_factory):
    """The README's example run as written in a fresh folder, with gentune.tune held to one
    trial of 60 steps scored at N = 200 (the block's own budget is checked, then replaced)."""
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "space.yaml").write_text(SPACE)
    real_tune, calls = gentune.tune, []

    def tiny_tune(**kwargs):
        calls.append(kwargs)
        return real_tune(
            **kwargs
            | {
                "budget": Budget(steps=60),
                "search": replace(kwargs["search"], trials=1, space=str(cwd / "space.yaml")),
                "n_eval": N,
                "early_stop": EarlyStop(evals=1, detectors=False, pruner="none"),
                "run": RunOptions(runs_dir=cwd / "runs", report=False, progress=False, device="cpu"),
            }
        )

    namespace: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(gentune, "tune", tiny_tune, raising=False)
        exec(compile(readme_example(), "README.md", "exec"), namespace)
    return cwd, namespace, calls


def test_the_readme_example_loads_the_best_generator_and_samples(readme):
    cwd, ns, calls = readme
    assert [c["dataset"] for c in calls] == ["digits"] and calls[0]["budget"].steps == 1000
    images, generator, result = ns["images"], ns["generator"], ns["result"]
    assert isinstance(generator, gentune.Generator) and generator.family == "gan-mlp"
    assert generator.trial == result.study.best_trial.number and not generator.module.training
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0.01
    assert torch.equal(generator.sample(16), images)  # seed 0 both times
    assert not torch.equal(generator.sample(16, seed=1), images)
    # best.pt is written in the one checkpoint format, and reads back as the same generator.
    again = gentune.load(cwd / "best.pt", device="cpu")
    assert again.config == generator.config and again.trial == generator.trial
    assert again.study == result.study.study_name and torch.equal(again.sample(16), images)
    config, module, _ = gentune.families.get_family("gan-mlp").load(cwd / "best.pt")
    assert config == generator.config


def test_load_by_study_name_is_best_model(readme):
    cwd, ns, _ = readme
    result = ns["result"]
    by_name = gentune.load(result.study.study_name, runs_dir=cwd / "runs", device="cpu")
    assert by_name.source.endswith("trials/0/generator.pt") and by_name.config.width == 32
    assert torch.equal(by_name.sample(16), ns["images"])
    assert by_name.config == gentune.load(result.study, trial=0, runs_dir=cwd / "runs").config


def test_score_of_a_trained_generator_equals_its_trial_metrics(readme):
    """gentune.score on the generator's samples from the trials' fixed seed gives the numbers
    GenerativeObjective stored for that trial."""
    _, ns, _ = readme
    trial = ns["result"].study.best_trial
    got = gentune.score(ns["generator"].sample(N, seed=EVAL_SEED), dataset="digits", n=N, device="cpu")
    stored = attrs.metrics(trial)
    assert stored is not None and stored["n"] == got.n == N
    for key, value in got.metrics().items():
        assert value == pytest.approx(stored[key], rel=1e-5, abs=1e-7), key
    assert got.floor == attrs.floor(ns["result"].study)


def test_a_trial_without_its_checkpoint_is_trained_again(readme, tmp_path):
    cwd, ns, _ = readme
    name = ns["result"].study.study_name
    shutil.copytree(cwd / "runs", tmp_path / "runs")
    ckpt = tmp_path / "runs" / name / "trials" / "0" / "generator.pt"
    ckpt.unlink()
    again = gentune.load(name, runs_dir=tmp_path / "runs", device="cpu")
    assert again.source.startswith("retrained trial 0") and ckpt.exists()
    assert torch.allclose(again.sample(16), ns["images"], atol=1e-6)  # training is deterministic


def test_legacy_checkpoints_load(tmp_path):
    shutil.copytree(ROOT / "tests" / "legacy" / "v0.1.0", tmp_path / "runs")
    legacy = gentune.load("legacy-gan", runs_dir=tmp_path / "runs", device="cpu")
    assert legacy.family == "gan-mlp" and legacy.sample(4).shape == (4, 1, 8, 8)
    with pytest.raises(GentuneError, match="your own objective"):
        gentune.load("legacy-user", runs_dir=tmp_path / "runs")


def test_what_load_refuses(tmp_path):
    with pytest.raises(GentuneError, match="no study 'nope'"):
        gentune.load("nope", runs_dir=tmp_path)
    (tmp_path / "mo").mkdir()
    url = f"sqlite:///{tmp_path / 'mo' / 'study.db'}"
    study = optuna.create_study(study_name="mo", storage=url, directions=["minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0, 2.0]))
    with pytest.raises(GentuneError, match=r"pass --trial N \(trial=N in gentune.load\).*\[0\]"):
        gentune.load("mo", runs_dir=tmp_path)
