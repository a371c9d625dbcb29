"""Search strategies: names a user types, mapped to seeded Optuna samplers."""

from __future__ import annotations

import warnings

import optuna

from ..errors import unknown_choice
from .space import SearchSpace

STRATEGIES = ("grid", "random", "qmc", "tpe", "gp")
DEFAULT_STRATEGY = "tpe"


def make_sampler(strategy: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    # The experimental flags below (QMC, TPE's group, constant liar) are chosen on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(strategy, space, seed)


def _make_sampler(strategy: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """A seeded sampler for `strategy`.

    TPE is multivariate with `group` (so conditional parameters, such as beta1 under Adam,
    are modelled jointly) and `constant_liar` (so concurrent workers do not pick the same
    point). GP uses Optuna's Gaussian-process sampler; QMC a scrambled Sobol sequence.

    >>> type(make_sampler("random", SearchSpace({}), seed=0)).__name__
    'RandomSampler'
    """
    if strategy == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "qmc":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False)
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    raise unknown_choice("strategy", strategy, STRATEGIES)


def grid_size(space: SearchSpace) -> int:
    """The number of points in the grid product."""
    n = 1
    for values in space.grid().values():
        n *= len(values)
    return n
