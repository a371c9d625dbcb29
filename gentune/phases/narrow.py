"""--narrow: a second study over the space narrowed around the first's top trials.

The new study `<study>-narrow` searches the space narrowed around the first phase's top-k
trials (gentune.search.narrow); its first trial re-runs the first phase's best configuration,
so the second phase starts from it. Both studies store the narrowed space (user attribute
`narrowed_space`); the new one also `narrowed_from`.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from gentune.phases.search import Search, TuneResult, value_of
from gentune.search.narrow import describe, narrow_space
from gentune.trial.attrs import StudyKey, TrialKey

NARROW_TOP = 5


def run_narrow(
    first: TuneResult,
    search: Search,
    *,
    top_k: int | None = None,
    trials: int | None = None,
    say: Callable[[str], None],
) -> TuneResult:
    """A second study over the space `first` searched, narrowed around its top-k complete trials."""
    study = first.study
    space = search.space_of(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = sorted(complete, key=value_of, reverse=reverse)[: top_k or NARROW_TOP]
    narrowed = narrow_space(space, [t.params for t in top])
    say(f"narrowed the space around the top {len(top)} trials of {study.study_name}:")
    for line in describe(space, narrowed) or ["(no numeric range to narrow)"]:
        say(f"  {line}")
    study.set_user_attr(StudyKey.NARROWED_SPACE, narrowed.to_dict())
    origin = {"study": study.study_name, "top_k": len(top), "trials": [t.number for t in top]}

    def prepare(new: optuna.Study) -> None:
        new.set_user_attr(StudyKey.NARROWED_FROM, origin)
        new.set_user_attr(StudyKey.NARROWED_SPACE, narrowed.to_dict())
        if not new.get_trials(deepcopy=False):  # start from the first phase's best
            new.enqueue_trial(
                top[0].params, user_attrs={TrialKey.CARRIED_FROM: f"{study.study_name}#{top[0].number}"}
            )

    return search.run(study=f"{study.study_name}-narrow", space=narrowed, prepare=prepare, trials=trials)
