"""How many worker processes a run uses when --workers is not given."""

from __future__ import annotations

import pytest

from gentune.phases import search
from gentune.settings import RunOptions


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(search, "usable_cores", lambda: 2)


def test_a_cpu_run_of_gentunes_family_trains_one_trial_per_core(two_cores):
    assert search.with_workers(RunOptions(device="cpu"), 20, can_spawn=True).workers == 2
    assert search.with_workers(RunOptions(device="cpu"), None, can_spawn=True).workers == 2


def test_few_trials_a_given_count_and_what_cannot_spawn_stay_as_they_are(two_cores):
    assert search.with_workers(RunOptions(device="cpu"), 9, can_spawn=True).workers == 1
    assert search.with_workers(RunOptions(device="cpu", workers=1), 20, can_spawn=True).workers == 1
    assert search.with_workers(RunOptions(device="cpu", workers=3), 2, can_spawn=False).workers == 3
    assert search.with_workers(RunOptions(device="cpu"), 20, can_spawn=False).workers == 1


def test_a_gpu_run_stays_in_one_process(two_cores):
    assert search.with_workers(RunOptions(device="cuda"), 20, can_spawn=True).workers == 1


def test_callbacks_are_refused_with_workers_given_but_not_with_the_default(two_cores, tmp_path):
    """Callbacks are called in this process; the default then keeps the trials here."""
    from gentune.settings import TuneRequest

    search.BuiltinSearch(TuneRequest(), RunOptions(runs_dir=tmp_path), callbacks=[print])
    with pytest.raises(Exception, match="callbacks"):
        search.BuiltinSearch(TuneRequest(), RunOptions(runs_dir=tmp_path, workers=2), callbacks=[print])
