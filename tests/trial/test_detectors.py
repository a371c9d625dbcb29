"""Failure detectors: each stops real training runs for its reason, and leaves good runs alone."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from gentune.api import Budget, Phases, RunOptions, SearchOptions, tune
from gentune.errors import GentuneError
from gentune.metrics import Evaluator
from gentune.models.gan_mlp import GANConfig
from gentune.search.space import SearchSpace
from gentune.train.gan import sample, train_gan
from gentune.trial.detectors import DetectorConfig, DetectorSet, detector_config, load_detector_file
from gentune.trial.monitor import Schedule, TrainingMonitor, incumbent
from gentune.trial.objective import EVAL_SEED

pytestmark = pytest.mark.usefixtures("one_thread")

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Measured on digits (bench/detector_calibration.py): FID 3.5-5.7 at 3000 steps over seeds 0-2.
KNOWN_GOOD = {
    "lr": 1.2e-4,
    "batch_size": 87,
    "optimizer": "adamw",
    "beta1": 0.145,
    "width": 64,
    "depth": 1,
    "weight_decay": 4.3e-7,
    "d_steps": 1,
}
# A draw of the default space that makes one digit class from the first evaluation on.
COLLAPSING = {
    "lr": 1.65e-3,
    "batch_size": 35,
    "optimizer": "sgd",
    "width": 128,
    "depth": 3,
    "weight_decay": 1.85e-5,
    "d_steps": 1,
}


@pytest.fixture(scope="module")
def evaluator(digits):
    return Evaluator(digits, n=500, seed=0).prepare()


def _watched(digits, evaluator, config: GANConfig, detectors: DetectorConfig, steps: int, evals: int = 5):
    """Train `config` under a TrainingMonitor of a real trial, in a study that already holds a
    complete trial of FID 5 (a good run); (trial, steps seen, the exception)."""
    study = optuna.create_study()
    study.add_trial(create_trial(value=5.0, intermediate_values={steps: 5.0}))
    trial = study.ask()
    monitor = TrainingMonitor(
        trial,
        schedule=Schedule(evals=evals, n=500),
        prune=False,
        detectors=DetectorSet(detectors, floor=evaluator.floor, incumbent=lambda: incumbent(study)),
        sample=lambda model, n, seed: sample(model, n, seed=seed),
        evaluator=evaluator,
        metric="fid",
        seed=EVAL_SEED,
    )
    seen = []

    def callback(step, total, signals, model):
        seen.append(step)
        monitor(step, total, signals, model)

    with pytest.raises(optuna.TrialPruned) as stopped:
        train_gan(config, digits, steps=steps, callback=callback)
    return study.trials[1], seen, stopped.value


def test_lr_1e_1_diverges_and_is_stopped_at_once(digits, evaluator):
    trial, seen, _ = _watched(digits, evaluator, GANConfig(lr=1e-1), DetectorConfig(), steps=3000)
    assert trial.user_attrs["prune_reason"] == "diverged"
    assert seen[-1] <= 200  # measured: the gradient norm passes 100 within the first 50 steps


def test_lr_1e_1_is_a_pruned_trial_with_reason_diverged_in_a_study(tmp_path):
    r = tune(
        dataset="digits",
        n_eval=200,
        search=SearchOptions(strategy="random", trials=1, space=SearchSpace({"lr": 0.1})),
        budget=Budget(steps=1500),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    )
    t = r.study.trials[0]
    assert t.state == TrialState.PRUNED and t.user_attrs["prune_reason"] == "diverged"
    assert "error" not in t.user_attrs and not t.intermediate_values  # stopped before evaluating
    assert r.best is None


def test_a_collapsed_generator_is_flagged_as_mode_collapse(digits, evaluator):
    only = DetectorConfig().only(["mode_collapse"])
    trial, seen, _ = _watched(digits, evaluator, GANConfig(**COLLAPSING), only, steps=3000)
    assert trial.user_attrs["prune_reason"] == "mode_collapse"
    # Two evaluations in a row below the entropy threshold, from a quarter of the budget on.
    assert seen[-1] == 1500 and trial.user_attrs["steps"] == 1500
    assert [f["step"] for f in trial.user_attrs["samples_progress"]] == [500, 1000, 1500]


def test_mode_collapse_compares_label_entropy_with_the_real_floor(digits, evaluator):
    ones = digits.train.x[digits.train.y == 1]
    one_class = ones[torch.arange(500) % len(ones)]
    real = digits.train.x[:500]
    detectors = DetectorSet(DetectorConfig(), floor=evaluator.floor, incumbent=lambda: 5.0)
    collapsed = evaluator.evaluate(one_class)
    assert collapsed["label_entropy"] < 0.2 * evaluator.floor["label_entropy"]
    assert detectors.on_evaluation(500, 3000, collapsed, collapsed["fid"]) is None  # before 25%
    assert detectors.on_evaluation(1000, 3000, collapsed, collapsed["fid"]) is None  # one is not enough
    assert detectors.on_evaluation(1500, 3000, collapsed, collapsed["fid"]) == "mode_collapse"
    healthy = DetectorSet(DetectorConfig(), floor=evaluator.floor, incumbent=lambda: 5.0)
    varied = evaluator.evaluate(real)
    assert [healthy.on_evaluation(s, 3000, varied, varied["fid"]) for s in (1000, 1500, 2000)] == [None] * 3
    # While no complete trial did better, a collapsed run may still be the study's best: kept.
    leading = DetectorSet(DetectorConfig(), floor=evaluator.floor, incumbent=lambda: None)
    assert [leading.on_evaluation(s, 3000, collapsed, collapsed["fid"]) for s in (1000, 1500, 2000)] == [
        None
    ] * 3


def test_discriminator_overpowering_is_detected_on_a_real_run(digits, evaluator):
    only = DetectorConfig().only(["d_overpowered"])
    trial, seen, _ = _watched(digits, evaluator, GANConfig(lr=1e-1), only, steps=3000, evals=0)
    assert trial.user_attrs["prune_reason"] == "d_overpowered"
    assert 500 <= seen[-1] <= 1000  # measured: d_loss < 0.05 with d_acc > 0.99 from about step 50


def test_d_overpowering_needs_a_whole_window():
    d = DetectorSet(DetectorConfig())
    beaten = {"g_loss": 9.0, "d_loss": 0.01, "d_acc": 1.0, "grad_norm": 1.0}
    fair = {"g_loss": 0.8, "d_loss": 1.2, "d_acc": 0.6, "grad_norm": 1.0}
    assert [d.on_signals(50 * i, 3000, beaten) for i in range(1, 10)] == [None] * 9
    assert d.on_signals(500, 3000, fair) is None  # the run restarts
    assert [d.on_signals(50 * i, 3000, beaten) for i in range(11, 20)] == [None] * 9
    assert d.on_signals(1000, 3000, beaten) == "d_overpowered"


def test_divergence_reads_non_finite_values_and_the_gradient_norm():
    assert DetectorSet(DetectorConfig()).on_signals(50, 100, {"g_loss": float("nan")}) == "diverged"
    d = DetectorSet(DetectorConfig())
    # A DCGAN's isolated spikes (measured: 123 and 158 between windows near 20) pass ...
    assert [
        d.on_signals(s, 1000, {"g_loss": 1.0, "grad_norm": g})
        for s, g in ((350, 17.0), (400, 123.0), (450, 23.0), (800, 158.0), (850, 22.0))
    ] == [None] * 5
    # ... a norm above 100 two windows running, or above 500 once, does not.
    assert [d.on_signals(s, 1000, {"g_loss": 1.0, "grad_norm": 150.0}) for s in (900, 950)] == [
        None,
        "diverged",
    ]
    assert (
        DetectorSet(DetectorConfig()).on_signals(50, 1000, {"g_loss": 1.0, "grad_norm": 840.0}) == "diverged"
    )
    loose = DetectorConfig().with_overrides(["diverged.max_grad_norm=1e3"])
    assert [
        DetectorSet(loose).on_signals(s, 1000, {"g_loss": 1.0, "grad_norm": 150.0}) for s in (900, 950)
    ] == [None] * 2


def test_posterior_collapse_reads_kl_after_the_warm_up():
    d = DetectorSet(DetectorConfig().with_overrides(["posterior_collapse.window=3"]))
    low = {"loss": 100.0, "kl": 0.01}
    assert [d.on_signals(s, 1000, low) for s in (50, 100, 150, 200)] == [None] * 4  # before 25%
    assert [d.on_signals(s, 1000, low) for s in (250, 300)] == [None, None]
    assert d.on_signals(350, 1000, low) == "posterior_collapse"
    healthy = DetectorSet(DetectorConfig())
    assert all(healthy.on_signals(s, 1000, {"kl": 25.0}) is None for s in range(250, 1000, 50))
    gan = DetectorSet(DetectorConfig())  # no kl entry: the detector stays silent
    assert all(gan.on_signals(s, 1000, {"g_loss": 1.0, "d_loss": 1.0}) is None for s in range(0, 1000, 50))


def test_stagnation_fires_only_behind_a_complete_trial():
    values = [30.0, 20.0, 20.5, 21.0, 20.1]  # no new best for 3 evaluations from the 3rd on
    leader = DetectorSet(DetectorConfig(), incumbent=lambda: 25.0)
    assert [leader.on_evaluation(i, 10, {}, v) for i, v in enumerate(values)] == [None] * 5
    behind = DetectorSet(DetectorConfig(), incumbent=lambda: 10.0)
    assert [behind.on_evaluation(i, 10, {}, v) for i, v in enumerate(values)][-1] == "stagnation"
    alone = DetectorSet(DetectorConfig(), incumbent=lambda: None)  # no complete trial yet
    assert all(alone.on_evaluation(i, 10, {}, v) is None for i, v in enumerate(values))
    anyway = DetectorSet(DetectorConfig().with_overrides(["stagnation.only_when_behind=false"]))
    assert [anyway.on_evaluation(i, 10, {}, v) for i, v in enumerate(values)][-1] == "stagnation"
    # Maximizing, 30 is the best of these values: stale from the 2nd on, behind 99, ahead of 10.
    behind_max = DetectorSet(DetectorConfig(), direction="maximize", incumbent=lambda: 99.0)
    assert [behind_max.on_evaluation(i, 10, {}, v) for i, v in enumerate(values)][3] == "stagnation"
    ahead_max = DetectorSet(DetectorConfig(), direction="maximize", incumbent=lambda: 10.0)
    assert all(ahead_max.on_evaluation(i, 10, {}, v) is None for i, v in enumerate(values))


def test_thresholds_are_configurable_and_checked(tmp_path):
    c = DetectorConfig().with_overrides(
        ["stagnation.patience=6", "mode_collapse.enabled=false", "d_overpowered.max_d_loss=0.1"]
    )
    assert c.stagnation.patience == 6 and not c.mode_collapse.enabled
    assert c.d_overpowered.max_d_loss == 0.1 and c.enabled() == [
        "diverged",
        "d_overpowered",
        "posterior_collapse",
        "stagnation",
    ]
    assert DetectorConfig.from_dict(c.to_dict()) == c
    f = tmp_path / "d.yaml"
    f.write_text("stagnation: {patience: 8}\ndiverged: {max_grad_norm: 500}\n")
    assert load_detector_file(f).stagnation.patience == 8
    assert detector_config("off", None, None).enabled() == []
    assert detector_config("diverged,stagnation", f, ["stagnation.patience=9"]).stagnation.patience == 9
    assert detector_config(None, None, None) is None
    for bad, words in [
        (["stagnation.patience=two"], "integer"),
        (["nope.x=1"], "unknown detector"),
        (["stagnation.wait=1"], "no setting 'wait'"),
        (["stagnation"], "name.key=value"),
        (["diverged.max_grad_norm=-1"], "number >= 0"),
    ]:
        with pytest.raises(GentuneError, match=words):
            DetectorConfig().with_overrides(bad)
    with pytest.raises(GentuneError, match="unknown detector"):
        detector_config("diverged,typo", None, None)


def test_cli_stores_detector_thresholds_in_the_study(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("stagnation: {patience: 8}\n")
    cmd = [
        sys.executable,
        "-m",
        "gentune",
        "tune",
        "--steps",
        "100",
        "--n-eval",
        "200",
        "--trials",
        "1",
        "--runs-dir",
        str(tmp_path),
        "--study",
        "d",
        "--no-report",
        "--detectors",
        "diverged,stagnation",
        "--detector-config",
        str(f),
        "--detector",
        "diverged.max_grad_norm=1e9",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path}/d/study.db")
    stored = DetectorConfig.from_dict(study.user_attrs["gentune"]["detectors"])
    assert stored.enabled() == ["diverged", "stagnation"]
    assert stored.stagnation.patience == 8 and stored.diverged.max_grad_norm == 1e9
    bad = subprocess.run(cmd[:-1] + ["stagnation.patience=x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "integer" in bad.stderr


def test_a_known_good_configuration_is_never_stopped_over_three_seeds(tmp_path):
    """3000 steps (the budget the detectors were calibrated at, and the digits default before
    it became 1000), default detectors, three seeds in one study (the first run and two
    --confirm re-runs, so stagnation has a complete trial to fall behind)."""
    r = tune(
        dataset="digits",
        budget=Budget(steps=3000),
        search=SearchOptions(strategy="random", trials=1, space=SearchSpace(dict(KNOWN_GOOD))),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
        phases=Phases(confirm=1, confirm_seeds=2),
    )
    assert r.best is not None, r.study.trials[0].user_attrs
    ranking = r.study.user_attrs["confirmed"]
    runs = optuna.load_study(
        study_name=f"{r.study.study_name}-confirm",
        storage=f"sqlite:///{tmp_path}/{r.study.study_name}-confirm/study.db",
    ).trials
    assert [t.state for t in runs] == [TrialState.COMPLETE] * 2, [t.user_attrs for t in runs]
    assert ranking[0]["n"] == 3 and not ranking[0]["stopped"]
    assert max(ranking[0]["values"]) < 10  # measured 3.5-5.7
    assert len(runs[0].user_attrs["samples_progress"]) == 6  # 5 evaluations and the final one
    print(json.dumps({k: ranking[0][k] for k in ("values", "mean", "sd")}))


def _kl_watched() -> tuple[optuna.Trial, TrainingMonitor]:
    """A fresh trial and a monitor that runs only the posterior-collapse detector on it."""
    trial = optuna.create_study().ask()
    monitor = TrainingMonitor(
        trial,
        schedule=Schedule(evals=0),
        prune=False,
        detectors=DetectorSet(DetectorConfig().only(["posterior_collapse"])),
        sample=None,
        evaluator=None,
        metric="loss",
        seed=EVAL_SEED,
    )
    return trial, monitor


def test_a_collapsed_vae_posterior_is_stopped_and_a_healthy_one_is_not(digits):
    """Measured on digits: KL >= 3.2 nats from 500 steps on with beta 1, below 0.01 with beta 5."""
    from gentune.models.vae import VAEConfig
    from gentune.train.vae import train_vae

    def watched(config):
        """(trial's user attrs, steps seen) of a real VAE run under the posterior-collapse detector."""
        trial, monitor = _kl_watched()
        seen = []

        def callback(step, total, signals, model):
            seen.append(step)
            monitor(step, total, signals, model)

        try:
            train_vae(config, digits, steps=2000, seed=0, callback=callback)
        except optuna.TrialPruned:
            pass
        return trial.user_attrs, seen

    collapsed, seen = watched(VAEConfig(beta=5.0))
    assert collapsed["prune_reason"] == "posterior_collapse" and seen[-1] < 2000
    healthy, seen = watched(VAEConfig())
    assert "prune_reason" not in healthy and seen[-1] == 2000


def test_a_rung_shorter_than_the_study_is_judged_against_the_studys_steps():
    """A promotion rung of 200 steps in a study of 2000 (monitor.horizon): the detectors' "not
    before a fraction of the budget" counts against the 2000, so a young trial is not stopped."""

    def stopped_at(horizon):
        trial, monitor = _kl_watched()
        monitor.horizon = horizon
        try:
            for step in range(10, 201, 10):
                monitor(step, 200, {"loss": 1.0, "kl": 0.0})
        except optuna.TrialPruned:
            return trial.user_attrs["steps"]
        return None

    assert stopped_at(None) == 140  # from step 50 (0.25 x 200), ten windows in a row
    assert stopped_at(2000) is None  # not before step 500 of the study's 2000
