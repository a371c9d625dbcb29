"""Range narrowing: shrink each numeric range around the best trials of a first phase.

For every float or int parameter, the new range spans the values the top-k trials used, widened
on each side by `PAD` of that span (and by at least `MIN_PAD` of the old range, so that a
parameter on which the top trials agree still keeps some room), clipped to the old range.
Log-scaled parameters are narrowed on the log scale. Categorical parameters and fixed values
are kept as they are: a category is not "near" another.

>>> from gentune.search.space import FloatSpec, SearchSpace
>>> space = SearchSpace({"lr": FloatSpec(low=1e-5, high=1e-2, log=True)})
>>> narrow_space(space, [{"lr": 1e-4}, {"lr": 4e-4}]).params["lr"].low > 1e-5
True
"""

from __future__ import annotations

import math
from typing import Any

from gentune.errors import SpaceError
from gentune.search.space import FloatSpec, IntSpec, SearchSpace

PAD = 0.25  # of the top trials' span, on each side
MIN_PAD = 0.05  # of the old range, on each side


def narrow_space(space: SearchSpace, top: list[dict[str, Any]]) -> SearchSpace:
    """`space` with each numeric range shrunk around the parameter values in `top` (dicts of
    the best trials' parameters, best first)."""
    if not top:
        raise SpaceError(
            "narrowing needs at least one finished trial to narrow around",
            value=0,
            fix="run the first phase until trials complete, or drop --narrow",
        )
    params: dict[str, Any] = {}
    for name, spec in space.params.items():
        values = [p[name] for p in top if name in p]
        if isinstance(spec, (FloatSpec, IntSpec)) and values and spec.step in (None, 1):
            params[name] = _narrow(spec, values)
        else:
            params[name] = spec
    return SearchSpace(params)


def _narrow(spec: FloatSpec | IntSpec, values: list[float]):
    log = spec.log
    f = math.log if log else float
    inv = math.exp if log else float
    old_lo, old_hi = f(spec.low), f(spec.high)
    lo, hi = f(min(values)), f(max(values))
    pad = max(PAD * (hi - lo), MIN_PAD * (old_hi - old_lo))
    lo, hi = max(old_lo, lo - pad), min(old_hi, hi + pad)
    if isinstance(spec, IntSpec):
        new_lo = max(spec.low, math.floor(inv(lo) + 1e-9))
        new_hi = min(spec.high, math.ceil(inv(hi) - 1e-9))
        return spec.model_copy(update={"low": int(new_lo), "high": int(max(new_lo, new_hi))})
    # At a clipped end keep the old bound exactly: exp(log(x)) may differ from x in the last bit.
    return spec.model_copy(
        update={"low": spec.low if lo <= old_lo else inv(lo), "high": spec.high if hi >= old_hi else inv(hi)}
    )


def describe(old: SearchSpace, new: SearchSpace) -> list[str]:
    """One line per parameter whose range changed: `name: [lo, hi] -> [lo, hi]`."""
    lines = []
    for name, spec in new.params.items():
        before = old.params.get(name)
        if (
            isinstance(spec, (FloatSpec, IntSpec))
            and isinstance(before, (FloatSpec, IntSpec))
            and before != spec
        ):
            lines.append(
                f"{name}: [{before.low:.4g}, {before.high:.4g}] -> "
                f"[{spec.low:.4g}, {spec.high:.4g}]" + (" (log)" if spec.log else "")
            )
    return lines
