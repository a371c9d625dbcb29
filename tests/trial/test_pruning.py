"""Evaluation during training and pruners: selectable, sized to the schedule, stopping real trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, tune
from gentune.errors import GentuneError, StudyError
from gentune.metrics import Evaluator
from gentune.models.gan_mlp import GANConfig
from gentune.search.pruners import PRUNERS, Startup, default_pruner, make_pruner
from gentune.search.space import SearchSpace
from gentune.settings import EarlyStop as Given
from gentune.settings import StudySettings, resolve_early_stop
from gentune.train.gan import sample, train_gan
from gentune.trial.detectors import DetectorConfig, DetectorSet
from gentune.trial.monitor import Schedule, TrainingMonitor
from gentune.trial.objective import EVAL_SEED

pytestmark = pytest.mark.usefixtures("one_thread")

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("none", "NopPruner"),
        ("median", "MedianPruner"),
        ("percentile", "PercentilePruner"),
        ("halving", "SuccessiveHalvingPruner"),
        ("hyperband", "HyperbandPruner"),
    ],
)
def test_every_pruner_is_selectable(name, kind):
    p = make_pruner(name, first_step=500, total_steps=3000)
    inner = p.pruner if isinstance(p, Startup) else p
    assert type(inner).__name__ == kind
    if name != "none":
        patient = make_pruner(name, first_step=500, total_steps=3000, patience=2)
        assert type(patient).__name__ == "PatientPruner"
    assert set(PRUNERS) == {"none", "median", "percentile", "halving", "hyperband"}


def test_bad_pruner_settings_name_the_fix():
    with pytest.raises(GentuneError, match="unknown pruner.*'asha'.*hyperband"):
        make_pruner("asha", first_step=1, total_steps=10)
    with pytest.raises(GentuneError, match="patience"):
        make_pruner("median", first_step=1, total_steps=10, patience=0)


def test_each_strategy_has_a_default_pruner():
    assert default_pruner("grid") == "none"  # a grid must measure every point it lists
    assert {default_pruner(s) for s in ("tpe", "random", "qmc", "gp")} == {"median"}


def test_study_pruner_puts_the_rungs_on_the_evaluation_steps():
    p = StudySettings(steps=3000, evals=5, pruner="hyperband").pruner_for()
    assert p.pruner._min_resource == 500 and p.pruner._max_resource == 3000
    p = StudySettings(steps=3000, eval_every=250, pruner="median").pruner_for()
    assert p._n_warmup_steps == 250
    p = StudySettings(epochs=2.0, evals=5, pruner="hyperband").pruner_for()  # steps unknown yet
    assert p.pruner._max_resource == "auto"


def _complete(study, value: float, steps=(100, 200, 300, 400, 500)):
    study.add_trial(
        create_trial(
            value=value,
            params={"x": 0.0},
            distributions={"x": FloatDistribution(0, 1)},
            intermediate_values={s: value for s in steps},
        )
    )


@pytest.mark.parametrize("name", ["halving", "hyperband"])
def test_startup_prunes_nothing_before_three_complete_trials(name):
    study = optuna.create_study(pruner=make_pruner(name, first_step=100, total_steps=900))

    def run(values: list[float]) -> bool:
        """Report values at steps 100, 200, ...; complete unless pruned; True if pruned."""
        trial = study.ask()
        for i, v in enumerate(values, 1):
            trial.report(v, 100 * i)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                return True
        study.tell(trial, values[-1])
        return False

    assert not run([50.0] * 9)  # worse than nothing so far: kept, there is no yardstick yet
    assert not run([1.0] * 9)
    assert not run([60.0] * 9)  # far behind the second trial, but within the first three
    pruned = [run([70.0] * 9) for _ in range(6)]  # now judged against the three above
    assert any(pruned)


def test_a_trial_behind_the_study_is_pruned_with_reason_pruned(digits):
    """A real GAN trial against three complete trials that scored near the floor at every step."""
    evaluator = Evaluator(digits, n=500, seed=0).prepare()
    study = optuna.create_study(pruner=make_pruner("median", first_step=100, total_steps=600))
    for _ in range(3):
        _complete(study, evaluator.floor["fid"])
    trial = study.ask()
    monitor = TrainingMonitor(
        trial,
        schedule=Schedule(every=100, n=500),
        detectors=DetectorSet(DetectorConfig().only([])),
        sample=lambda m, n, seed: sample(m, n, seed=seed),
        evaluator=evaluator,
        metric="fid",
        seed=EVAL_SEED,
    )
    with pytest.raises(optuna.TrialPruned):
        train_gan(GANConfig(), digits, steps=600, callback=monitor)
    study.tell(trial, state=TrialState.PRUNED)
    t = study.trials[-1]
    assert t.user_attrs["prune_reason"] == "pruned"
    assert list(t.intermediate_values) == [100]  # stopped at its first evaluation
    assert [f["step"] for f in t.user_attrs["samples_progress"]] == [100]


def test_evaluations_use_fixed_latents_so_steps_compare_across_trials(tmp_path):
    space = SearchSpace({"lr": 2e-4, "beta1": 0.5})
    r = tune(
        dataset="digits",
        n_eval=200,
        search=SearchOptions(strategy="random", trials=2, space=space),
        budget=Budget(steps=300),
        early_stop=EarlyStop(pruner="none", detectors="off"),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    )
    a, b = r.study.trials
    assert list(a.intermediate_values) == [50, 100, 150, 200, 250, 300]  # 5 evaluations + final
    assert a.intermediate_values == b.intermediate_values  # same config, seed and latents
    assert a.intermediate_values[300] == pytest.approx(a.value)  # the final step, same N
    # Evaluations during training compute only what is read; the final one computes everything.
    assert {"fid", "kid", "precision", "recall", "label_entropy"} <= set(a.user_attrs["metrics"])
    frames = a.user_attrs["samples_progress"]
    assert [f["step"] for f in frames] == [50, 100, 150, 200, 250, 300]
    assert all(f["png"].startswith("iVBOR") for f in frames)  # base64 PNG


def test_pruner_settings_are_stored_and_kept_on_resume(tmp_path):
    run = RunOptions(runs_dir=tmp_path, progress=False, report=False, study="p")
    kw = dict(dataset="digits", n_eval=200, budget=Budget(steps=100))
    r = tune(
        **kw, search=SearchOptions(trials=1), early_stop=EarlyStop("percentile", patience=2, evals=3), run=run
    )
    stored = r.study.user_attrs["gentune"]
    assert (stored["pruner"], stored["patience"], stored["evals"]) == ("percentile", 2, 3)
    r = tune(
        **kw, search=SearchOptions(trials=2), run=run
    )  # no pruner given: the stored one, not the default
    assert r.study.user_attrs["gentune"]["pruner"] == "percentile"
    with pytest.raises(StudyError, match="pruner='percentile'.*pruner='median'"):
        tune(**kw, early_stop=EarlyStop(pruner="median"), run=run)
    new = tune(
        **kw,
        search=SearchOptions(trials=1),  # the default 20 trials check nothing more here
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False, study="q"),
    )
    # a new study gets the strategy's default
    assert new.study.user_attrs["gentune"]["pruner"] == "median"
    assert StudySettings.from_dict({"model": "gan-mlp"}).pruner == "none"  # old studies: no pruning


def test_four_argument_callbacks_receive_the_generator(digits):
    seen = []
    train_gan(
        GANConfig(),
        digits,
        steps=100,
        log_every=50,
        callback=lambda step, total, signals, model: seen.append((step, type(model).__name__, set(signals))),
    )
    assert [(step, kind) for step, kind, _ in seen] == [(50, "Generator"), (100, "Generator")]
    assert all({"d_acc", "d_loss", "g_loss", "grad_norm"} <= keys for _, _, keys in seen)


SMALLEST = {"transformer": SearchSpace({"n_layer": 1, "n_head": 2, "d_model": 32, "batch_size": 16})}


@pytest.mark.parametrize("model", ["vae", "transformer"])
def test_the_nll_objective_reports_validation_loss_during_training(tmp_path, model):
    """Likelihood studies are watched too: the trainer's validation loss, at each evaluation."""
    r = tune(
        model=model,
        dataset="digits",
        objective="nll",
        n_eval=200,  # the final scoring samples (a Transformer one token at a time); not read here
        # The smallest Transformer of its space: the check is where the evaluations go, not the model.
        search=SearchOptions(strategy="random", trials=1, space=SMALLEST.get(model)),
        budget=Budget(steps=100),  # evaluations every 25 steps, the likelihood trainers' log: 4
        early_stop=EarlyStop(evals=3, pruner="none", detectors="off"),
        run=RunOptions(runs_dir=tmp_path, progress=False, report=False),
    )
    t = r.study.trials[0]
    assert t.state == TrialState.COMPLETE and len(t.intermediate_values) >= 3
    val = {p["step"]: p["val"] for p in t.user_attrs["loss_curves"]}
    for step, value in t.intermediate_values.items():
        assert value == pytest.approx(val[step])
    assert "samples_progress" not in t.user_attrs  # nothing sampled for a likelihood


def test_a_family_with_slow_sampling_evaluates_on_fewer_samples():
    from gentune.families import get_family

    assert get_family("diffusion").eval_samples == 250 and get_family("gan-mlp").eval_samples is None
    assert get_family("auto").eval_samples == 250  # one N for every family of the search
    assert resolve_early_stop("tpe", Given(), None, 250)["eval_samples"] == 250
    # A study stored before keeps its own N when resumed.
    assert resolve_early_stop("tpe", Given(), {"eval_samples": None}, 250)["eval_samples"] is None
