"""Search strategies: names a user types, mapped to seeded Optuna samplers."""

from __future__ import annotations

import warnings

import optuna

from gentune.errors import unknown_choice
from gentune.search.space import SearchSpace

STRATEGIES = ("grid", "random", "qmc", "tpe", "gp")
DEFAULT_STRATEGY = "tpe"


def make_sampler(
    strategy: str, space: SearchSpace, seed: int, worker: int = 0
) -> optuna.samplers.BaseSampler:
    # The experimental flags below (QMC, TPE's group, constant liar) are chosen on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(strategy, space, seed, worker)


def _make_sampler(
    strategy: str, space: SearchSpace, seed: int, worker: int = 0
) -> optuna.samplers.BaseSampler:
    """A seeded sampler for `strategy`; `worker` tells apart workers sharing one study.

    Workers draw from different seeds (seed + worker), so their random draws differ; QMC
    workers share one sequence, point i going to trial i; grid points are queued in the study.

    TPE is multivariate with `group` (so conditional parameters, such as beta1 under Adam,
    are modelled jointly) and `constant_liar` (so concurrent workers do not pick the same
    point). GP uses Optuna's Gaussian-process sampler; QMC a scrambled Sobol sequence.

    >>> type(make_sampler("random", SearchSpace({}), seed=0)).__name__
    'RandomSampler'
    """
    if strategy == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed + worker)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed + worker)
    if strategy == "qmc":
        return TrialIndexedQMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=seed,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed + worker),
        )
    if strategy == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed + worker, multivariate=True, group=True, constant_liar=True
        )
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed + worker, warn_independent_sampling=False)
    raise unknown_choice("strategy", strategy, STRATEGIES)


class TrialIndexedQMCSampler(optuna.samplers.QMCSampler):
    """QMC whose point i goes to trial i.

    Optuna's QMCSampler counts its points in a study attribute that concurrent workers read
    and bump without a lock, so two workers can draw the same point; trial numbers are unique.
    """

    def sample_relative(self, study, trial, search_space):
        self._trial_number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study, search_space) -> int:
        return self._trial_number


def grid_size(space: SearchSpace) -> int:
    """The number of points in the grid product."""
    n = 1
    for values in space.grid().values():
        n *= len(values)
    return n
