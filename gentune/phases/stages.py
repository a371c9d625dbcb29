"""Tuning in phases: stepwise stages (--stages), range narrowing (--narrow), confirmation (--confirm).

Each phase is its own gentune study in the same storage, named after the base study:

- `<study>-screen`: with `--stages auto` (or a number), a short random search over the whole
  space whose parameter importances (optuna.importance) order the parameters;
- `<study>-stage1`, `-stage2`, ...: stage i tunes its group of parameters with the winners of
  the earlier stages fixed and the later groups at the config defaults. The winner after a
  stage is the better of that stage's best trial and the previous winner, so a stage never
  makes the result worse. Each stage study stores user attribute `stage`: its index, the
  parameters it tunes, the values it fixed and the previous stage's name;
- `<study>-narrow`: a second study over the space narrowed around the first phase's top-k
  trials (gentune.search.narrow); its first trial re-runs the first phase's best
  configuration, so the second phase starts from it. Both studies store the narrowed space
  (user attribute `narrowed_space`); the new one also `narrowed_from`;
- `<study>-confirm`: see gentune.phases.confirm.

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
from gentune.search.narrow import describe, narrow_space
from gentune.search.space import SearchSpace
from gentune.study.store import StudySettings, default_study_name, stored_settings
from gentune.trial.user_objective import observed_space

SCREEN_TRIALS = 10
AUTO_STAGES = 2
NARROW_TOP = 5


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
    search: Callable[..., Any],
    *,
    base: str,
    base_space: SearchSpace,
    defaults: dict[str, Any],
    say: Callable[[str], None],
) -> tuple[Any, list[optuna.Study]]:
    """Run the stages; `search(study=..., space=..., prepare=...)` runs one study (gentune's
    trainer or a user's objective) and returns its TuneResult.

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
    studies, result, previous = [], None, None
    for i, group in enumerate(groups, 1):
        space = stage_space(base_space, group, fixed, defaults)
        link = {"index": i, "of": len(groups), "tuned": group, "fixed": dict(fixed), "previous": previous}
        say(f"stage {i}/{len(groups)}: tuning {group}, fixed {fixed or '-'}")
        result = search(
            study=f"{base}-stage{i}", space=space, prepare=lambda s, link=link: s.set_user_attr("stage", link)
        )
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
        result.study.set_user_attr("stage", {**link, "winner": winner})
        studies.append(result.study)
        previous = result.study.study_name
    return result, studies


def run_narrow(
    first: Any,
    search: Callable[..., Any],
    space: SearchSpace,
    *,
    top_k: int | None = None,
    say: Callable[[str], None],
) -> Any:
    """A second study over `space` narrowed around `first`'s top-k complete trials."""
    study = first.study
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    top = sorted(complete, key=lambda t: t.value, reverse=reverse)[: top_k or NARROW_TOP]
    narrowed = narrow_space(space, [t.params for t in top])
    say(f"narrowed the space around the top {len(top)} trials of {study.study_name}:")
    for line in describe(space, narrowed) or ["(no numeric range to narrow)"]:
        say(f"  {line}")
    study.set_user_attr("narrowed_space", narrowed.to_dict())
    origin = {"study": study.study_name, "top_k": len(top), "trials": [t.number for t in top]}

    def prepare(new: optuna.Study) -> None:
        new.set_user_attr("narrowed_from", origin)
        new.set_user_attr("narrowed_space", narrowed.to_dict())
        if not new.get_trials(deepcopy=False):  # start from the first phase's best
            new.enqueue_trial(
                top[0].params, user_attrs={"carried_from": f"{study.study_name}#{top[0].number}"}
            )

    return search(study=f"{study.study_name}-narrow", space=narrowed, prepare=prepare)


def _settings_for_name(kw: dict) -> StudySettings:
    dataset = kw.get("dataset", "digits")
    if dataset == "files":
        from pathlib import Path

        dataset = f"files:{Path(str(kw.get('data_dir'))).name}"
    return StudySettings(
        model=kw.get("model", "gan-mlp"),
        dataset=dataset,
        strategy=kw.get("strategy", "tpe"),
        objective=kw.get("objective", "fid"),
    )


def _printer(kw: dict) -> Callable[[str], None]:
    """Where phase messages go: stderr, beside the progress display (printed even without it)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False).print


def tune_in_phases(
    *,
    stages: str | None = None,
    screen_trials: int | None = None,
    narrow: bool = False,
    narrow_top: int | None = None,
    narrow_trials: int | None = None,
    confirm: int | None = None,
    confirm_seeds: int | None = None,
    objective_fn: Callable | None = None,
    **kw,
) -> Any:
    """gentune.api.tune, then the phases asked for, in order: stages, narrowing, confirmation.

    With `objective_fn` (a user's Optuna objective) each study runs it through
    gentune.api.run_objective instead, `kw` being run_objective's arguments; the phases then
    work on the ranges its trials recorded (gentune.trial.user_objective).

    Returns the TuneResult of the last searched study; with `confirm`, its `best` also holds
    the ranking by mean over seeds (key `confirmed`).
    """
    import json

    from gentune.api import TuneResult, best_summary
    from gentune.phases.confirm import CONFIRM_SEEDS

    say = _printer(kw)
    search = _search(objective_fn, kw)
    if stages:
        groups = parse_stages(stages)
        if objective_fn is None:
            base = kw.get("study") or default_study_name(_settings_for_name(kw))
            base_space, defaults = _builtin_space(kw)
        else:
            base, base_space, defaults = kw["study"], None, None
        screen = None
        if isinstance(groups, int) or objective_fn is not None:
            # A user's objective shows its ranges and a starting point only by running.
            screen = search(
                study=f"{base}-screen",
                strategy="random",
                pruner="none",
                space=base_space,
                trials=screen_trials or SCREEN_TRIALS,
            )
        if objective_fn is not None:
            base_space = observed_space(screen.study)
            defaults = screen.best["params"] if screen.best else {}
        if isinstance(groups, int):
            order = importance_order(screen.study, base_space)
            groups = split_groups(order, groups)
            say(f"screening {screen.study.study_name}: importance order {order}")
        result, studies = run_stages(
            groups, search, base=base, base_space=base_space, defaults=defaults, say=say
        )
    else:
        result = search()
        studies = [result.study]
    if narrow:
        trials = narrow_trials if narrow_trials is not None else kw.get("trials")
        space = (
            SearchSpace.from_dict(stored_settings(result.study).space)
            if objective_fn is None
            else observed_space(result.study)
        )
        result = run_narrow(result, lambda **o: search(**o, trials=trials), space, top_k=narrow_top, say=say)
        studies.append(result.study)
    if confirm:
        from gentune.phases.confirm import confirm as run_confirm

        run_confirm(
            studies,
            top=confirm,
            seeds=confirm_seeds or CONFIRM_SEEDS,
            search=None if objective_fn is None else search,
            storage=kw.get("storage"),
            runs_dir=kw.get("runs_dir", "runs"),
            data_dir=kw.get("data_dir"),
            device=kw.get("device", "auto"),
            progress=kw.get("progress", True),
            threads=kw.get("threads"),
        )
        best = best_summary(result.study)
        if best is not None:
            (result.out_dir / "best.json").write_text(json.dumps(best, indent=2))
        result = TuneResult(result.study, result.out_dir, best)
    return result


def _builtin_space(kw: dict) -> tuple[SearchSpace, dict[str, Any]]:
    """The space a built-in study searches, and its family's config defaults."""
    from gentune.api import resolve_space
    from gentune.data import dataset_kind
    from gentune.families import get_family

    model, kind = kw.get("model", "gan-mlp"), dataset_kind(kw.get("dataset", "digits"))
    return resolve_space(model, kw.get("space"), kind), get_family(model, kind).config_cls().to_dict()


def _search(objective_fn: Callable | None, kw: dict) -> Callable[..., Any]:
    """search(**overrides) -> TuneResult: one study, with `kw` overridden (study, space,
    prepare, strategy, trials, pruner)."""
    from gentune.api import run_objective, tune

    if objective_fn is None:
        return lambda **o: tune(**{**kw, **o})

    def search(*, space: SearchSpace | None = None, prepare=None, pruner=None, **o):
        del pruner  # a user's objective does its own pruning, if any

        def phase(study: optuna.Study) -> None:
            if space is not None:
                study.set_user_attr("phase_space", space.to_dict())
            if prepare is not None:
                prepare(study)

        return run_objective(objective_fn, **{**kw, **o}, prepare=phase)

    return search
