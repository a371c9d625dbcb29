"""Trust in the report and in `best`: the best trial's noise band over latent seeds, the trials
inside it, what the training loss would have picked, and importance only on enough trials."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from report_fixtures import make_study
from typer.testing import CliRunner

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, tune
from gentune.cli import app
from gentune.errors import GentuneError
from gentune.phases import noise
from gentune.report import write_report
from gentune.report.extract import extract_study, open_study
from gentune.report.html import render_html
from gentune.report.trust import _importance_trials, importance, loss_pick
from gentune.study.store import builtin_settings
from gentune.study.summary import band_text, best_summary, noise_lines, within_band
from gentune.trial.attrs import StudyKey
from gentune.trial.objective import EVAL_SEED

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = 3
# Small networks: the tests are about what is stored and shown, not about the models.
SPACE = "mode: narrow\nparams:\n  width: [32, 64]\n  depth: [1]\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[optuna.Study, Path]:
    """A 4-trial digits study (60 steps, N = 200) with its band over 3 seeds and its report."""
    tmp = tmp_path_factory.mktemp("trust")
    (tmp / "space.yaml").write_text(SPACE)
    result = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=60),
        search=SearchOptions(strategy="random", trials=4, space=tmp / "space.yaml"),
        early_stop=EarlyStop(pruner="none", detectors="off", evals=0),
        run=RunOptions(runs_dir=tmp, study="trust", progress=False, noise_seeds=SEEDS),
    )
    return result.study, result.out_dir


def test_the_band_is_stored_for_the_best_trial(built):
    study, _ = built
    band = study.user_attrs[StudyKey.NOISE_BAND]
    assert band["trial"] == study.best_trial.number and band["metric"] == "fid"
    assert band["seeds"] == noise.band_seeds(SEEDS) and len(band["values"]) == SEEDS
    assert band["value"] == study.best_value and band["n"] == 200
    assert min(band["values"]) <= band["mean"] <= max(band["values"]) and band["sd"] > 0


def test_the_band_rescores_the_checkpoint_the_trial_was_scored_on(built, monkeypatch):
    """Under the trials' own latent seed, the re-score is the trial's value exactly: the band
    measures the same generator with the same evaluator, only other samples."""
    study, out_dir = built
    stored = study.user_attrs[StudyKey.NOISE_BAND]
    monkeypatch.setattr(noise, "band_seeds", lambda k: [EVAL_SEED])
    try:
        again = noise.noise_band(study, builtin_settings(study), out_dir=out_dir, seeds=1)
        assert again is not None and again["values"] == [study.best_value]
    finally:
        study.set_user_attr(StudyKey.NOISE_BAND, stored)
    assert noise.noise_band(study, builtin_settings(study), out_dir=out_dir, seeds=0) is None
    with pytest.raises(GentuneError, match="--noise-seeds must be an integer >= 0"):
        RunOptions(noise_seeds=-1)


def test_report_and_best_show_the_band_and_flag_the_trials_inside(built):
    study, out_dir = built
    band = study.user_attrs[StudyKey.NOISE_BAND]
    summary = best_summary(study)
    values = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert summary["noise_band"]["within"] == within_band(band, values)
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert band_text(band) in page
    flagged = {int(n) for n in re.findall(r'<tr class="within"><td class="num" data-v="(\d+)"', page)}
    assert flagged == set(summary["noise_band"]["within"])


def test_the_loss_card_names_the_trial_with_the_lowest_final_loss(built):
    study, out_dir = built
    done = study.get_trials(states=(TrialState.COMPLETE,))
    lowest = min(done, key=lambda t: (t.user_attrs["final_loss"]["g"], t.number))  # gan-mlp: G loss
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "What the loss would have picked" in page
    if lowest.number == study.best_trial.number:
        assert f"The loss would have picked the best trial, #{lowest.number}" in page
    else:
        ratio = lowest.value / study.best_value
        assert (
            f"The loss would have picked trial #{lowest.number}: FID {lowest.value:.4g}, {ratio:.2g}x" in page
        )


def test_no_loss_card_when_the_objective_is_the_loss_or_no_loss_was_stored(tmp_path):
    storage, name = make_study(tmp_path, n_trials=4, n_failed=0, n_pruned=0, images=False)
    study = optuna.load_study(study_name=name, storage=storage)
    info = extract_study(study)
    assert loss_pick(info).trial.number == 0  # the fixture's trials tie on G loss 0.9
    study.set_user_attr("gentune", {**study.user_attrs["gentune"], "objective": "loss"})
    assert loss_pick(extract_study(study)) is None
    stripped = replace(info, trials=tuple(replace(t, final_loss={}) for t in info.trials))
    assert loss_pick(stripped) is None


def test_importance_needs_ten_trials_and_says_what_it_rests_on(built, tmp_path):
    study, out_dir = built
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "Parameter importance skipped: drawn from 10 trials or more" in page
    assert "this study has 4 complete" in page and 'id="plot-importance"' not in page
    (tmp_path / "nine").mkdir(), (tmp_path / "ten").mkdir()
    nine, name = make_study(tmp_path / "nine", n_trials=9, n_failed=0, n_pruned=0, images=False)
    found = importance(
        optuna.load_study(study_name=name, storage=nine), extract_study(open_study(nine, name))
    )
    assert not found.values and "this study has 9 complete" in found.why_not
    ten, name = make_study(tmp_path / "ten", n_trials=10, n_failed=0, n_pruned=0, images=False)
    page = write_report(ten, name, tmp_path / "ten.html")[0].read_text(encoding="utf-8")
    assert "Parameter importance (from 10 complete trials)" in page and 'id="plot-importance"' in page


def test_pruned_trials_count_at_their_last_value_capped_at_the_worst_complete(tmp_path):
    storage, name = make_study(tmp_path, n_trials=12, n_failed=1, n_pruned=4, images=False)
    study = optuna.load_study(study_name=name, storage=storage)
    found = importance(study, extract_study(study))
    assert (found.complete, found.pruned) == (7, 4) and found.basis == "from 7 complete and 4 pruned trials"
    assert set(found.values) == {"lr", "batch_size", "hidden", "activation"}
    worst = max(t.value for t in study.get_trials(states=(TrialState.COMPLETE,)))
    copied = [t.value for t in _importance_trials(study, extract_study(study))[0][7:]]
    last = [
        t.intermediate_values[max(t.intermediate_values)]
        for t in study.get_trials(states=(TrialState.PRUNED,))
    ]
    assert copied == [min(v, worst) for v in last]


def test_gentune_best_prints_the_band_and_tune_takes_noise_seeds(built):
    study, out_dir = built
    band = study.user_attrs[StudyKey.NOISE_BAND]
    shown = CliRunner().invoke(app, ["best", "--study", "trust", "--runs-dir", str(out_dir.parent)])
    assert shown.exit_code == 0, shown.output
    assert f"noise band: {band_text(band)}" in shown.output
    refused = CliRunner().invoke(app, ["tune", "--noise-seeds", "-1", "--runs-dir", str(out_dir.parent)])
    # The CLI's entry point prints a GentuneError as one line with exit code 2 (tests/cli).
    assert isinstance(refused.exception, GentuneError)
    assert "--noise-seeds must be an integer >= 0" in str(refused.exception)


def test_a_study_without_a_band_shows_nothing_new(tmp_path):
    """Older studies, user objectives and --noise-seeds 0 store no band; a band measured on a
    trial that is no longer the best is not shown either."""
    storage, name = make_study(tmp_path, n_trials=4, n_failed=0, n_pruned=0, images=False)
    study = optuna.load_study(study_name=name, storage=storage)
    summary = best_summary(study)
    assert summary["noise_band"] is None and noise_lines(summary) == []
    assert "latent seeds" not in render_html(extract_study(study), [])
    stale = {"trial": 99, "metric": "fid", "value": 1.0, "mean": 1.0, "sd": 0.1, "seeds": [1, 2]}
    study.set_user_attr(StudyKey.NOISE_BAND, stale)
    assert best_summary(study)["noise_band"] is None
    assert "latent seeds" not in render_html(extract_study(study), [])
