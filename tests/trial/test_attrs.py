"""The stored keys: docs/storage.md and gentune/trial/attrs.py name the same ones, and the readers
tolerate what older or hand-written studies hold."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from gentune.trial import attrs
from gentune.trial.attrs import OptunaKey, StudyKey, SystemKey, TrialKey

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
# Which key class each documented table belongs to, by the heading above the table.
SECTIONS = {
    "Study user attributes": StudyKey,
    "Trial user attributes": TrialKey,
    "gentune's own": SystemKey,
    "Optuna's, which gentune writes or reads": OptunaKey,
}


def documented_keys(text: str) -> dict[str, set[str]]:
    """Per heading, the backticked names in the first column of its tables' rows.

    A first cell may name several keys ("`train_seed` / `fixed_config`")."""
    found: dict[str, set[str]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        cells = line.split("|")
        if not line.startswith("|") or len(cells) < 3 or set(cells[1].strip()) <= set("-: "):
            continue
        first = cells[1].strip()
        if first == "key":
            continue
        names = re.findall(r"`([^`]+)`", first)
        assert names, f"a row of {heading!r} names no key in backticks: {line!r}"
        found.setdefault(heading, set()).update(names)
    return found


def test_storage_doc_lists_every_key_and_no_other():
    found = documented_keys(DOC.read_text())
    assert set(found) == set(SECTIONS), f"docs/storage.md sections with keys: {sorted(found)}"
    problems = []
    for heading, kind in SECTIONS.items():
        in_code, in_doc = set(attrs.keys(kind).values()), found[heading]
        if missing := sorted(in_code - in_doc):
            problems.append(f"{kind.__name__} keys not in docs/storage.md ({heading}): {missing}")
        if unknown := sorted(in_doc - in_code):
            problems.append(f"keys in docs/storage.md ({heading}) not in attrs.{kind.__name__}: {unknown}")
    assert not problems, "\n".join(problems)


def test_documented_keys_reports_a_missing_row():
    text = "## Study user attributes\n\n| key | value |\n|---|---|\n| `gentune` | settings |\n"
    assert documented_keys(text) == {"Study user attributes": {"gentune"}}


def test_keys_are_unique_within_each_kind():
    for kind in (StudyKey, TrialKey, SystemKey, OptunaKey):
        values = list(attrs.keys(kind).values())
        assert len(values) == len(set(values)), kind.__name__


def test_requeue_keys_are_trial_keys():
    assert set(attrs.REQUEUE_KEYS) <= set(attrs.keys(TrialKey).values())


def test_attrs_imports_nothing_from_gentune():
    source = Path(attrs.__file__).read_text()
    assert not re.search(r"^\s*(from|import)\s+gentune", source, re.M)


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study()


def test_readers_on_a_complete_trial(study):
    trial = study.ask()
    trial.set_user_attr(TrialKey.METRICS, {"fid": 3.5, "n": 200})
    trial.set_user_attr(TrialKey.SEED, 7)
    trial.set_user_attr(TrialKey.TRAIN_SECONDS, 2)
    trial.set_user_attr(TrialKey.OVERFITTING, True)
    study.tell(trial, 3.5)
    frozen = study.trials[0]
    assert attrs.metrics(frozen) == {"fid": 3.5, "n": 200}
    assert attrs.seed(frozen) == 7 and attrs.train_seconds(frozen) == 2.0
    assert attrs.overfitting(frozen) and attrs.prune_reason(frozen) is None
    assert attrs.train_seed(frozen, default=0) == 0


def test_readers_refuse_wrong_types(study):
    """A study edited by hand, or by another tool, must not crash a report."""
    study.set_user_attr(StudyKey.SETTINGS, "not a dict")
    study.set_user_attr(StudyKey.TARGET_TRIALS, True)
    trial = study.ask()
    trial.set_user_attr(TrialKey.METRICS, [1, 2])
    trial.set_user_attr(TrialKey.SEED, "7")
    trial.set_user_attr(TrialKey.OVERFITTING, "yes")
    trial.set_user_attr(TrialKey.TEXT_SAMPLES, [1, "a"])
    assert attrs.settings(study) == {} and attrs.target_trials(study) is None
    assert attrs.metrics(trial) is None and attrs.seed(trial) is None
    assert not attrs.overfitting(trial)
    assert attrs.text_samples(trial) == ["1", "a"]
    assert attrs.samples_progress(trial) == [] and attrs.loss_curves(trial) == []


def test_train_seed_reads_the_queued_seed(study):
    study.enqueue_trial({}, user_attrs={TrialKey.TRAIN_SEED: 3})
    assert attrs.train_seed(study.ask(), default=0) == 3
