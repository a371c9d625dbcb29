"""Later phases (--stages, --narrow, --confirm) for a user's own Optuna objective.

gentune cannot see inside `objective(trial)`: the ranges are the ones its `suggest_*` calls
pass. So a phase hands the objective a PhaseTrial instead of the Optuna trial. It asks Optuna
for each parameter the phase restricts with the phase's range (narrowing) or with its one fixed
value (stages), and passes every other call through unchanged. The phase's space is stored in
the study (`phase_space`), so `gentune worker` applies it as well.

The ranges a phase starts from are those the first run's trials recorded (`observed_space`).
Every trial of a user objective runs with Python's, NumPy's and torch's generators seeded by
the study seed (`--confirm` re-runs use seed + 1, + 2, ...), so a trial can be repeated.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gentune.search.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace
from gentune.trial import attrs
from gentune.trial.attrs import TrialKey


def observed_space(study: optuna.Study) -> SearchSpace:
    """The parameters the study's finished trials suggested, with the widest range each used."""
    params: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        for name, d in t.distributions.items():
            params[name] = _widen(params.get(name), _spec(d))
    return SearchSpace(params)


def _spec(d) -> Any:
    if isinstance(d, FloatDistribution):
        return FloatSpec(low=d.low, high=d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return IntSpec(low=d.low, high=d.high, log=d.log, step=d.step)
    if isinstance(d, CategoricalDistribution):
        return CategoricalSpec(choices=list(d.choices))  # type: ignore[arg-type]  # a None choice fails here
    raise TypeError(f"unsupported distribution {d!r}")


def _widen(old, new):
    if old is None or type(old) is not type(new):
        return new
    if isinstance(new, CategoricalSpec):
        return new.model_copy(update={"choices": list(dict.fromkeys([*old.choices, *new.choices]))})
    return new.model_copy(update={"low": min(old.low, new.low), "high": max(old.high, new.high)})


def seed_everything(seed: int) -> None:
    """Seed the generators a training function usually draws from."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PhaseTrial:
    """An optuna.Trial whose `suggest_*` calls follow the phase's space where it names the
    parameter: a spec gives the range (or choices) to draw from, a plain value is fixed."""

    def __init__(self, trial: optuna.Trial, space: SearchSpace):
        self._trial, self._space = trial, space

    def __getattr__(self, name: str):
        return getattr(self._trial, name)

    def _fixed(self, name: str) -> tuple[bool, Any]:
        fixed = self._space.fixed()
        return name in fixed, fixed.get(name)

    def _range(self, name: str, low, high, spec_type: type[FloatSpec] | type[IntSpec], cast) -> tuple:
        """The bounds to draw `name` from: its fixed value, the phase's range, or the call's."""
        is_fixed, value = self._fixed(name)
        if is_fixed:
            return cast(value), cast(value)
        spec = self._space.params.get(name)
        return (spec.low, spec.high) if isinstance(spec, spec_type) else (low, high)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        low, high = self._range(name, low, high, FloatSpec, float)
        return self._trial.suggest_float(name, low, high, step=step, log=log)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        low, high = self._range(name, low, high, IntSpec, int)
        return self._trial.suggest_int(name, low, high, step=step, log=log)

    def suggest_categorical(self, name: str, choices: Sequence) -> Any:
        spec = self._space.params.get(name)
        is_fixed, value = self._fixed(name)
        if is_fixed and value in choices:
            choices = [value]
        elif isinstance(spec, CategoricalSpec):
            choices = [c for c in choices if c in spec.choices] or choices
        return self._trial.suggest_categorical(name, choices)

    # The tutorial's Optuna 2 spellings, routed through the calls above.
    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self.suggest_float(name, low, high, step=q)


def phase_objective(objective, study: optuna.Study):
    """`objective` as a study of a user's objective runs it: seeded, and under the study's
    phase space when it has one."""
    stored = attrs.phase_space(study)
    space = SearchSpace.from_dict(stored) if stored else None
    seed = int(attrs.settings(study).get("seed", 0))

    def call(trial: optuna.Trial) -> float:
        run_seed = attrs.train_seed(trial, default=seed)
        trial.set_user_attr(TrialKey.SEED, run_seed)
        seed_everything(run_seed)
        return objective(PhaseTrial(trial, space) if space is not None else trial)

    return call
