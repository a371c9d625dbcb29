"""Tuning in phases: stepwise stages (--stages), range narrowing (--narrow), confirmation (--confirm).

Each phase is its own gentune study in the same storage, named after the base study, and each
drives one `Search` (gentune.phases.search): the same phases serve gentune's own families and
a user's objective. Re-running the same command resumes every phase: finished phases run no
new trial.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from gentune.phases.confirm import CONFIRM_SEEDS, confirm
from gentune.phases.narrow import run_narrow
from gentune.phases.search import Search, TuneResult
from gentune.phases.stages import SCREEN_TRIALS, importance_order, parse_stages, run_stages, split_groups
from gentune.settings import Phases
from gentune.study.summary import best_summary, write_json


def run_phases(search: Search, phases: Phases, say: Callable[[str], None] | None = None) -> TuneResult:
    """One search, or the phases asked for, in order: stages, narrowing, confirmation.

    Returns the TuneResult of the last searched study; with `confirm`, its `best` also holds
    the ranking by mean over seeds (key `confirmed`). Phase messages go to `say` (default:
    stderr, beside the progress display).
    """
    say = say or Console(stderr=True, soft_wrap=True, highlight=False, markup=False).print
    if phases.stages:
        result, studies = _stages(search, phases, say)
    else:
        result = search.run()
        studies = [result.study]
    if phases.narrow:
        result = run_narrow(result, search, top_k=phases.narrow_top, trials=phases.narrow_trials, say=say)
        studies.append(result.study)
    if phases.confirm:
        confirm(studies, search, top=phases.confirm, seeds=phases.confirm_seeds or CONFIRM_SEEDS)
        best = best_summary(result.study)
        if best is not None:
            write_json(result.out_dir / "best.json", best)
        result = TuneResult(result.study, result.out_dir, best)
    return result


def _stages(search: Search, phases: Phases, say: Callable[[str], None]) -> tuple[TuneResult, list]:
    groups = parse_stages(phases.stages or "")
    base_space = search.known_space()
    screen = None
    if isinstance(groups, int) or base_space is None:
        # A user's objective shows its ranges and a starting point only by running.
        screen = search.run(
            study=f"{search.name}-screen",
            strategy="random",
            pruner="none",
            trials=phases.screen_trials or SCREEN_TRIALS,
        )
    if base_space is None:
        assert screen is not None
        base_space = search.space_of(screen.study)
    if isinstance(groups, int):
        assert screen is not None
        order = importance_order(screen.study, base_space)
        groups = split_groups(order, groups)
        say(f"screening {screen.study.study_name}: importance order {order}")
    return run_stages(groups, search, base_space=base_space, defaults=search.defaults(screen), say=say)
