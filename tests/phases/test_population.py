"""The search drives a population (gentune.phases.population): promotion, PBT, continuous
batching, resume, and what the study stores. Tiny studies on digits: K = 4, 30 steps (PBT,
resume) or a ladder of 10-270 (promotion), N = 200."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState

from gentune.api import Budget, EarlyStop, RunOptions, SearchOptions, tune
from gentune.data import load_dataset
from gentune.errors import GentuneError
from gentune.families import get_family
from gentune.phases import population as population_module
from gentune.phases.pbt import pairs
from gentune.phases.population import PopulationRun, measure_k
from gentune.phases.promotion import candidate, promote, rung_steps, state_path
from gentune.report.extract import extract_study
from gentune.report.lineage import lineage_html, lineage_rows
from gentune.search.space import FloatSpec, SearchSpace
from gentune.settings import DatasetRef, TuneRequest, resolve_settings
from gentune.study.runner import Interrupted
from gentune.study.store import FINISHED, count_finished, requeue
from gentune.trial import attrs

STEPS = 30
# Small members of one structure, so that all of them stack in one population: cheap to train.
SPACE = SearchSpace(
    {
        "lr": FloatSpec(low=1e-4, high=3e-3, log=True),
        "beta1": FloatSpec(low=0.3, high=0.9),
        "width": 32,
        "depth": 1,
        "batch_size": 32,
        "latent_dim": 16,
    }
)


def _tune(
    runs, study: str, trials: int, steps=STEPS, eval_every=STEPS // 2, evals=None, workers=None, **search
) -> optuna.Study:
    """A digits population study (K = 4); `evals` instead of `eval_every` evaluates at the
    study's steps / (evals + 1)."""
    when = {"eval_every": eval_every} if evals is None else {"evals": evals}
    return tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=steps),
        search=SearchOptions(trials=trials, population=4, space=SPACE, **search),
        early_stop=EarlyStop(eval_samples=200, pruner="none", **when),
        run=RunOptions(runs_dir=runs, study=study, workers=workers, progress=False, report=False),
    ).study


PROMO_STEPS = 90  # the study's steps: rungs of 10, 30, 90 and 270 steps


@pytest.fixture(scope="module")
def promoted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return _tune(runs, "promo", trials=9, steps=PROMO_STEPS, eval_every=4), runs


def test_a_promoted_trial_continues_its_rung_from_the_state(promoted):
    study, runs = promoted
    trials = study.get_trials()
    up = [t for t in trials if attrs.promoted_from(t) is not None]
    assert up, "the top third of rung 0 is promoted"
    for t in up:
        parent = trials[attrs.promoted_from(t)]
        assert attrs.rung(t) == attrs.rung(parent) + 1
        assert t.params == parent.params
        assert attrs.start_step(t) == attrs.steps(parent) == rung_steps(PROMO_STEPS, attrs.rung(parent), 2)
        # Trained on, not from scratch (to its rung's end, unless a detector stopped it).
        assert attrs.start_step(t) < attrs.steps(t) <= rung_steps(PROMO_STEPS, attrs.rung(t), 2)
        assert attrs.steps(t) == rung_steps(PROMO_STEPS, attrs.rung(t), 2) or t.state == TrialState.PRUNED
        assert (runs / "promo" / attrs.start_state(t)).is_file()
        assert min(t.intermediate_values) > attrs.steps(parent)
    assert "promoted" in lineage_html(extract_study(study).trials)


def test_fresh_trials_train_a_ninth_of_the_steps_and_trials_count_configurations(promoted):
    study, _ = promoted
    finished = study.get_trials(states=FINISHED)
    fresh = [t for t in finished if attrs.promoted_from(t) is None]
    assert len(fresh) == 9  # --trials 9: nine configurations, the promotions on top
    assert count_finished(study) == 9 < len(finished)  # what a rerun and --more count
    assert all(attrs.steps(t) == 10 for t in fresh if t.state == TrialState.COMPLETE)
    by_rung = Counter(attrs.rung(t) for t in finished)
    assert by_rung[1] == 3  # the top third of the nine
    # Under the study's steps a rung ends scored on what its decision reads; at them, fully.
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert "fid" in attrs.metrics(t)
        assert ("precision" in attrs.metrics(t)) == (attrs.steps(t) >= PROMO_STEPS)
    for t in finished:  # above rung 1, only a trial that beat the one it continued went on
        parent = attrs.promoted_from(t)
        if parent is not None and attrs.rung(t) >= 2:
            grand = study.trials[attrs.promoted_from(study.trials[parent])]
            assert study.trials[parent].value < grand.value
    # Draining (no configuration left to ask), the best of each rung went on: rung 2 was reached.
    assert by_rung[2] >= 1 or not any(
        t.value < study.trials[attrs.promoted_from(t)].value for t in finished if attrs.rung(t) == 1
    )


def test_a_study_made_before_the_lower_rungs_keeps_its_ladder():
    gan = get_family("gan-mlp")
    request = TuneRequest(dataset=DatasetRef("digits"), search=SearchOptions())
    old = {"population": 4, "promotion": True}  # stored by gentune before rungs_below
    s = resolve_settings(request, old, gan, gan.default_space())
    assert (s.population, s.promotion, s.rungs_below) == (4, True, 0)
    assert rung_steps(3000, 0, s.rungs_below) == 3000
    request = TuneRequest(dataset=DatasetRef("digits"), search=SearchOptions(population=4))
    new = resolve_settings(request, None, gan, gan.default_space())
    assert new.rungs_below == 2 and rung_steps(3000, 0, new.rungs_below) == 333


def test_slots_are_refilled_while_others_train(promoted):
    study, _ = promoted
    trials = study.get_trials()
    # A slot freed while another member still trained was filled at once: trial b started
    # after trial c ended and before trial a, which trained alongside c, ended.
    assert any(
        c.datetime_complete <= b.datetime_start < a.datetime_complete
        and a.datetime_start <= c.datetime_complete
        for a in trials
        for b in trials
        for c in trials
    )


def test_the_study_stores_k_and_promotion(promoted):
    study, _ = promoted
    assert attrs.population_k(study) == 4
    stored = attrs.settings(study)
    assert (stored["population"], stored["promotion"]) == (4, True)


def test_pbt_copies_the_top_into_the_bottom_and_records_the_lineage(tmp_path):
    study = _tune(tmp_path, "pbt", trials=8, strategy="pbt")
    trials = study.get_trials()
    children = [t for t in trials if attrs.pbt_parent(t) is not None]
    assert children
    replaced = [t for t in trials if attrs.prune_reason(t) == "pbt_replaced"]
    assert replaced
    for t in children:
        parent = trials[attrs.pbt_parent(t)]
        assert attrs.generation(t) == attrs.generation(parent) + 1
        assert attrs.perturbation(t)
        space = SPACE.params
        for name, how in attrs.perturbation(t).items():
            if how in ("x0.8", "x1.2"):
                ratio = t.params[name] / parent.params[name]
                clipped = t.params[name] in (space[name].low, space[name].high)
                assert ratio == pytest.approx(float(how[1:])) or clipped
        assert attrs.steps(t) == STEPS and attrs.start_step(t) > 0
    info = extract_study(study)
    rows = lineage_rows(info.trials)
    assert {r["trial"] for r in rows} >= {t.number for t in children}
    child = children[-1]
    row = next(r for r in rows if r["trial"] == child.number)
    assert row["how"] == "PBT copy" and row["ancestry"][-2:] == [attrs.pbt_parent(child), child.number]
    assert "Lineage" in lineage_html(info.trials)  # the report's section


def test_interrupted_run_keeps_finished_trials_and_resumes(tmp_path, monkeypatch):
    calls = {"n": 0}
    advance = PopulationRun._advance

    def ctrl_c_after_a_while(self, pop):
        calls["n"] += 1
        if calls["n"] == 3:  # the first four trials have finished, two more are training
            raise KeyboardInterrupt
        advance(self, pop)

    monkeypatch.setattr(population_module.PopulationRun, "_advance", ctrl_c_after_a_while)
    with pytest.raises(Interrupted):
        _tune(tmp_path, "resume", trials=6, promotion=False)
    monkeypatch.setattr(population_module.PopulationRun, "_advance", advance)
    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path}/resume/study.db")
    before = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    interrupted = [t for t in study.get_trials() if attrs.interrupted(t)]
    assert before and interrupted
    assert all(t.state == TrialState.FAIL for t in interrupted)
    study = _tune(tmp_path, "resume", trials=6, promotion=False)
    after = {t.number: t.value for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(after) == 6 and all(after[n] == v for n, v in before.items())
    rerun = {t.user_attrs.get("retry_of") for t in study.get_trials()} - {None}
    assert {t.number for t in interrupted} <= rerun


def test_a_family_without_populations_is_refused():
    vae = get_family("vae")
    request = TuneRequest(model="vae", dataset=DatasetRef("digits"), search=SearchOptions(population=4))
    with pytest.raises(GentuneError, match="cannot train as a population"):
        resolve_settings(request, None, vae, vae.default_space())


def test_population_defaults_and_rules():
    gan = get_family("gan-mlp")

    def resolved(device="cpu", **search):
        request = TuneRequest(dataset=DatasetRef("digits"), search=SearchOptions(**search))
        s = resolve_settings(request, None, gan, gan.default_space(), device=device)
        return s.population, s.promotion, s.pruner

    assert resolved() == (None, False, "median")  # one at a time on a CPU
    assert resolved("cuda")[:2] == ("auto", True)
    assert resolved(population="8")[:2] == (8, True)
    assert resolved(population=8, promotion=False)[:2] == (8, False)
    assert resolved(strategy="pbt") == ("auto", False, "none")
    with pytest.raises(GentuneError, match="at least 4"):
        resolved(strategy="pbt", population=2)
    with pytest.raises(GentuneError, match="needs --population"):
        resolved(promotion=True)


def test_pbt_pairs_the_bottom_quarter_with_the_top():
    assert pairs(list(range(8))) == [(7, 0), (6, 1)]
    assert pairs([0, 1, 2, 3]) == [(3, 0)]


def test_a_promoted_trial_queued_again_after_a_crash_continues_from_its_state(promoted):
    study, runs = promoted
    up = next(t for t in study.get_trials() if attrs.promoted_from(t) is not None)
    requeue(study, up)  # as recover_orphans does for a trial whose process died
    again = _tune(runs, "promo", trials=10, steps=PROMO_STEPS, eval_every=4)
    rerun = next(t for t in again.get_trials() if t.user_attrs.get("retry_of") == up.number)
    assert rerun.state == TrialState.COMPLETE
    assert attrs.start_state(rerun) == attrs.start_state(up)
    assert attrs.steps(rerun) == attrs.steps(up)
    assert min(rerun.intermediate_values) > attrs.start_step(up)  # from the state, not step 0


def test_population_auto_measures_k():
    family = get_family("gan-mlp")
    config = family.config_cls(width=32, depth=1, batch_size=32, latent_dim=16)
    k = measure_k(family, load_dataset("digits"), config, "cpu", seconds=0.05, max_k=4)
    assert k >= 1 and k & (k - 1) == 0  # a power of two, grown while it paid


def test_fresh_trials_take_a_populations_structure_so_they_stack(tmp_path):
    study = tune(
        dataset="digits",
        n_eval=200,
        budget=Budget(steps=10),
        search=SearchOptions(trials=4, population=4, promotion=False),
        early_stop=EarlyStop(evals=0, pruner="none", detectors="off"),
        run=RunOptions(runs_dir=tmp_path, study="stack", progress=False, report=False, noise_seeds=0),
    ).study
    family = get_family("gan-mlp")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    keys = [family.population_key(family.config_cls.from_dict(attrs.config(t))) for t in trials]
    # The sampler drew a structure, and the next trial joined it; a structure takes in at most
    # a tenth of the study's trials (at least 2), so the third drew a new one.
    assert keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2]
    assert len({t.params["lr"] for t in trials}) == 4  # each drew its own lr


def _ladder(tmp_path, rows):
    """An in-memory study of (state, rung, value) rows, each complete one with its state file."""
    study = optuna.create_study()
    for number, (state, rung, value) in enumerate(rows):
        study.add_trial(
            optuna.trial.create_trial(
                state=state, value=value, params={}, distributions={}, user_attrs={"rung": rung}
            )
        )
        if state == TrialState.COMPLETE:
            path = tmp_path / state_path(number)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    return study


def test_draining_promotes_a_trial_once_it_is_sure_to_be_in_its_rungs_top_third(tmp_path):
    done, running = TrialState.COMPLETE, TrialState.RUNNING
    rung1 = [(done, 1, v) for v in (3.5, 2.9, 2.4, 2.0)]
    # A rung-1 trial still runs: while configurations arrive ASHA's rule promotes the top
    # third so far (floor: 4 // 3 = 1); draining, the rung will hold 5, whose top third (2)
    # the running one may yet enter, so only the best is sure to go on.
    study = _ladder(tmp_path, [*rung1, (running, 1, None)])
    assert candidate(study, tmp_path).number == 3
    assert candidate(study, tmp_path, draining=True).number == 3
    promote(study, study.trials[3])
    assert candidate(study, tmp_path, draining=True) is None
    # Two running at rung 0 or 1: nothing is sure (top 2 of 6, both of them may land first).
    study = _ladder(tmp_path, [*rung1, (running, 1, None), (running, 0, None)])
    assert candidate(study, tmp_path, draining=True) is None
    # All in: the top third rounded up (2 of 4), the best first.
    study = _ladder(tmp_path, rung1)
    for best in (3, 2):
        assert candidate(study, tmp_path, draining=True).number == best
        promote(study, study.trials[best])
    assert candidate(study, tmp_path, draining=True) is None
    # Trials pruned at a rung entered it: 3 complete and 3 pruned send 2 on, not 1.
    study = _ladder(
        tmp_path, [(done, 1, 2.0), (done, 1, 2.5), (done, 1, 3.0), *[(TrialState.PRUNED, 1, None)] * 3]
    )
    for best in (0, 1):
        assert candidate(study, tmp_path, draining=True).number == best
        promote(study, study.trials[best])
    assert candidate(study, tmp_path, draining=True) is None
    # The ladder tops out at top_rung: a rung-2 trial goes no further under top_rung 2.
    assert candidate(_ladder(tmp_path, [(done, 2, 1.0)]), tmp_path, draining=True, top_rung=2) is None
    assert candidate(_ladder(tmp_path, [(done, 2, 1.0)]), tmp_path, draining=True).number == 0


def test_two_workers_share_the_ladder_and_promote_each_trial_once(tmp_path):
    study = _tune(tmp_path, "two", trials=10, steps=PROMO_STEPS, eval_every=4, workers=2)
    trials = study.get_trials()
    assert count_finished(study) == 10
    parents = [attrs.promoted_from(t) for t in trials if attrs.promoted_from(t) is not None]
    assert parents and len(parents) == len(set(parents))  # no trial promoted twice
    assert len({attrs.worker(t) for t in trials}) == 2  # both processes trained trials
    assert attrs.population_k(study) == 2  # each worker its share of K = 4
    # Without --timeout the ladder ends at the study's steps: no trial trains beyond them.
    assert max(attrs.steps(t) or 0 for t in trials) <= PROMO_STEPS
    assert all(t.state in FINISHED for t in trials)


def test_a_short_rung_is_evaluated_at_the_studys_cadence(tmp_path):
    # evals=2 on 90 steps: a trial alone is scored at 30 and 60, and so is a member of any rung
    # (one of 10 or 30 steps at its end only): the pruner and detectors see the same steps.
    study = _tune(tmp_path, "cadence", trials=6, steps=PROMO_STEPS, evals=2)
    seen = [(s, attrs.steps(t)) for t in study.get_trials() for s in t.intermediate_values]
    # At the rung's own cadence, rung 0 (10 steps) would have been scored at 4 and 8.
    assert seen and all(s % 30 == 0 or s == end for s, end in seen)
