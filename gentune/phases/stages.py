"""--stages: tune the parameters in groups, most important first.

Each stage is its own gentune study in the same storage, named after the base study:

- `<study>-screen`: with `--stages auto` (or a number), a short random search over the whole
  space whose parameter importances (optuna.importance) order the parameters;
- `<study>-stage1`, `-stage2`, ...: stage i tunes its group of parameters with the winners of
  the earlier stages fixed and the later groups at the config defaults. The winner after a
  stage is the better of that stage's best trial and the previous winner, so a stage never
  makes the result worse. Each stage study stores user attribute `stage`: its index, the
  parameters it tunes, the values it fixed and the previous stage's name.

Re-running the same command resumes every phase: finished phases run no new trial.

A user's objective (--objective-fn) gets the same phases: its screening run (always run: it is
how gentune learns the objective's ranges) gives the ranges and, from its best trial, the
values that later groups keep; see gentune.trial.user_objective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from gentune.errors import GentuneError
from gentune.phases.search import Search, TuneResult
from gentune.search.space import SearchSpace
from gentune.trial.attrs import StudyKey

SCREEN_TRIALS = 10
AUTO_STAGES = 2


def parse_stages(text: str) -> list[list[str]] | int:
    """`auto` -> 2; `3` -> 3 (stages ordered by a screening run); `lr,batch_size:beta1` ->
    [["lr", "batch_size"], ["beta1"]] (the user's own groups, in order)."""
    text = text.strip()
    if text == "auto":
        return AUTO_STAGES
    if text.isdigit():
        if int(text) < 2:
            raise GentuneError(
                "--stages N needs N >= 2",
                value=text,
                fix="pass --stages auto, --stages 3 or groups like lr,batch_size:beta1",
            )
        return int(text)
    groups = [[p.strip() for p in group.split(",") if p.strip()] for group in text.split(":")]
    if any(not g for g in groups) or len(groups) < 2:
        raise GentuneError(
            "--stages must be auto, a number of stages, or two or more groups of parameters separated by ':'",
            value=text,
            fix="write e.g. --stages lr,batch_size:beta1,d_steps",
        )
    seen = [p for g in groups for p in g]
    if len(seen) != len(set(seen)):
        raise GentuneError(
            "--stages lists a parameter in two stages",
            value=text,
            fix="list each parameter in one stage only",
        )
    return groups


def split_groups(order: list[str], n: int) -> list[list[str]]:
    """`order` (most important first) cut into n groups of near-equal size, larger ones first."""
    n = min(n, len(order))
    size, extra = divmod(len(order), n)
    groups, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        groups.append(order[start:end])
        start = end
    return groups


def importance_order(study: optuna.Study, space: SearchSpace) -> list[str]:
    """The tuned parameters of `space`, most important first (Optuna's default importance
    evaluator over the complete trials); parameters it does not rank go last."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        raise GentuneError(
            "the screening run needs at least 2 complete trials to rank the parameters",
            value=len(complete),
            fix="raise --screen-trials, or give the stages yourself, e.g. "
            "--stages lr,batch_size:beta1,d_steps",
        )
    importances = optuna.importance.get_param_importances(study)
    ranked = [p for p in importances if p in space.tuned()]
    return ranked + [p for p in space.tuned() if p not in ranked]


def stage_space(
    base: SearchSpace, group: list[str], fixed: dict[str, Any], defaults: dict[str, Any]
) -> SearchSpace:
    """`base` tuning only `group`; earlier winners in `fixed`, every other parameter at its
    default (kept as a fixed value, so the conditions of tuned parameters still see it); a
    parameter without a default stays tuned."""
    params: dict[str, Any] = {}
    for name, spec in base.params.items():
        if name in group:
            params[name] = spec
        elif name in fixed:
            params[name] = fixed[name]
        elif name in base.tuned() and name in defaults:
            params[name] = defaults[name]
        else:
            params[name] = spec
    return SearchSpace(params)


def _better(a: float, b: float | None, direction: str) -> bool:
    return b is None or (a < b if direction == "minimize" else a > b)


def run_stages(
    groups: list[list[str]],
    search: Search,
    *,
    base_space: SearchSpace,
    defaults: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[TuneResult, list[optuna.Study]]:
    """Run the stages, each a study of `search` named `<search.name>-stageN`.

    Returns (the last stage's TuneResult, every stage study); the winner over all stages is in
    the last study's user attribute `stage`.
    """
    unknown = [p for g in groups for p in g if p not in base_space.tuned()]
    if unknown:
        raise GentuneError(
            "--stages names parameters the search space does not tune",
            value=unknown,
            fix="use names from the space: " + ", ".join(base_space.tuned()),
        )
    fixed: dict[str, Any] = {}
    winner: dict[str, Any] = {"value": None, "study": None, "config": None}
    studies: list[optuna.Study] = []
    previous: str | None = None
    for i, group in enumerate(groups, 1):
        space = stage_space(base_space, group, fixed, defaults)
        link = {"index": i, "of": len(groups), "tuned": group, "fixed": dict(fixed), "previous": previous}
        say(f"stage {i}/{len(groups)}: tuning {group}, fixed {fixed or '-'}")

        def mark(study: optuna.Study, link: dict[str, Any] = link) -> None:
            study.set_user_attr(StudyKey.STAGE, link)

        result = search.run(study=f"{search.name}-stage{i}", space=space, prepare=mark)
        direction = result.study.direction.name.lower()
        best = result.best
        if best is not None and _better(best["value"], winner["value"], direction):
            # A user's objective has no config: its parameters are what the stages fix.
            winner = {
                "value": best["value"],
                "study": result.study.study_name,
                "config": best["config"] or best["params"],
                "trial": best["trial"],
            }
        if winner["config"] is None:
            raise GentuneError(
                f"stage {i} ended without a complete trial",
                value=result.study.study_name,
                fix="raise --trials, or check the pruned trials' reasons with gentune best",
            )
        fixed.update({name: winner["config"][name] for name in group if name in winner["config"]})
        result.study.set_user_attr(StudyKey.STAGE, {**link, "winner": winner})
        studies.append(result.study)
        previous = result.study.study_name
    return result, studies  # groups is never empty (parse_stages)
