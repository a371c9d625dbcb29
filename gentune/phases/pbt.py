"""Population Based Training (Jaderberg et al. 2017): exploit the best members, explore around them.

After each evaluation of a population, the members that have been evaluated since they started
are ranked by their last reported value. Each member of the bottom QUANTILE is replaced: its
trial is PRUNED (`prune_reason` pbt_replaced), and a new trial continues a copy of a top member
(weights, optimizer state) with perturbed hyperparameters. Floats are multiplied by 0.8 or 1.2
(within the space's range), categoricals resampled with probability RESAMPLE; a change that the
population cannot take in place (one that alters `Family.population_key`: widths, batch size,
optimizer) is undone. The new trial records `pbt_parent`, `generation` and `perturbation`, so
the report can draw the lineage.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from gentune.search.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace

QUANTILE = 0.25  # the bottom quarter copies the top quarter
FACTORS = (0.8, 1.2)
RESAMPLE = 0.2  # chance to resample each categorical parameter


def pairs(ranked: Sequence[Any], quantile: float = QUANTILE) -> list[tuple[Any, Any]]:
    """(loser, winner) pairs: the bottom `quantile` of `ranked` (best first), each with one of
    the top `quantile`; none with fewer than 4 members (no top and bottom apart).

    >>> pairs([1, 2, 3, 4, 5, 6, 7, 8])
    [(8, 1), (7, 2)]
    >>> pairs([1, 2, 3])
    []
    """
    if len(ranked) < 4:
        return []
    n = max(1, int(len(ranked) * quantile))
    return list(zip(reversed(ranked[-n:]), ranked[:n]))


def perturb(
    params: dict[str, Any],
    space: SearchSpace,
    rng: random.Random,
    same_population: Callable[[dict[str, Any]], bool],
) -> tuple[dict[str, Any], dict[str, str]]:
    """`params` explored: (new parameters, {name: "x0.8" | "x1.2" | "resampled"}).

    `same_population(candidate)` says whether a candidate can continue in place; a change that
    cannot is undone.

    >>> from gentune.search.space import FloatSpec
    >>> space = SearchSpace({"lr": FloatSpec(low=1e-4, high=1e-2, log=True)})
    >>> new, how = perturb({"lr": 1e-3}, space, random.Random(0), lambda p: True)
    >>> how["lr"] in ("x0.8", "x1.2"), round(new["lr"] / 1e-3, 1) in (0.8, 1.2)
    (True, True)
    """
    out, how = dict(params), {}
    for name, spec in space.tuned().items():
        if name not in params:
            continue  # inactive under a condition
        old = params[name]
        if isinstance(spec, FloatSpec):
            factor = rng.choice(FACTORS)
            new: Any = min(spec.high, max(spec.low, float(old) * factor))
            label = f"x{factor}"
        elif isinstance(spec, IntSpec):
            new = min(spec.high, max(spec.low, int(old) + rng.choice((-spec.step, spec.step))))
            label = f"{new - int(old):+d}"
        elif isinstance(spec, CategoricalSpec) and rng.random() < RESAMPLE:
            new, label = rng.choice(spec.choices), "resampled"
        else:
            continue
        if new == old:
            continue
        trial = {**out, name: new}
        if same_population(trial):
            out, how[name] = trial, label
    return out, how
