"""Search strategies: names a user types, mapped to seeded Optuna samplers."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import unknown_choice
from gentune.search.space import SearchSpace

STRATEGIES = ("grid", "random", "qmc", "tpe", "gp", "nsga2", "pbt")
DEFAULT_STRATEGY = "tpe"
# Trials per NSGA-II generation. Optuna's 50 suits hundreds of trials; a gentune study holds
# tens (20 by default), which under 50 would never leave the random first generation.
NSGA2_POPULATION = 10


def make_sampler(
    strategy: str, space: SearchSpace, seed: int, worker: int = 0
) -> optuna.samplers.BaseSampler:
    """A seeded sampler for `strategy`; `worker` tells apart workers sharing one study.

    Every strategy but grid draws from a `StreamSampler`: the first process on an empty study
    draws today's stream (seed + worker), and a resumed study or a second process on the
    same study draws from a stream of its own, so neither repeats trials already run. QMC
    workers share one sequence, point i going to trial i; grid points are queued in the study.

    TPE is multivariate with `group` (so conditional parameters, such as beta1 under Adam,
    are modelled jointly) and `constant_liar` (so concurrent workers do not pick the same
    point). GP uses Optuna's Gaussian-process sampler; QMC a scrambled Sobol sequence; nsga2
    the genetic NSGA-II, meant for multi-objective studies (TPE and GP handle those too).

    >>> type(make_sampler("random", SearchSpace({}), seed=0).sampler).__name__
    'RandomSampler'
    """
    if strategy == "grid":
        # Grid trials are queued points (gentune.study.store.enqueue_grid): nothing is drawn.
        return optuna.samplers.GridSampler(space.grid(), seed=seed + worker)
    if strategy not in STRATEGIES:
        raise unknown_choice("strategy", strategy, STRATEGIES)
    return StreamSampler(lambda stream: _quiet(lambda: _make_sampler(strategy, seed, stream)), seed, worker)


def _quiet(make: Callable[[], optuna.samplers.BaseSampler]) -> optuna.samplers.BaseSampler:
    # The experimental flags (QMC, TPE's group, constant liar) are chosen on purpose.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make()


def _make_sampler(strategy: str, seed: int, stream: int) -> optuna.samplers.BaseSampler:
    """The sampler of `strategy` drawing from the random stream `stream`; QMC's sequence stays
    the study's (`seed`), so that its points are shared out by trial number."""
    if strategy in ("random", "pbt"):  # PBT starts from random members, then copies and perturbs
        return optuna.samplers.RandomSampler(seed=stream)
    if strategy == "qmc":
        return TrialIndexedQMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=seed,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=stream),
        )
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=stream, multivariate=True, group=True, constant_liar=True)
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=NSGA2_POPULATION, seed=stream)
    return optuna.samplers.GPSampler(seed=stream, warn_independent_sampling=False)


def stream_seed(seed: int, worker: int, trial_number: int) -> int:
    """The seed of the stream that starts at trial `trial_number` of worker `worker`.

    >>> stream_seed(0, 0, 2) == stream_seed(0, 0, 2) != stream_seed(0, 0, 3)
    True
    """
    digest = hashlib.sha256(f"gentune-stream:{seed}:{worker}:{trial_number}".encode()).digest()
    return int.from_bytes(digest[:4], "little")  # NumPy's RandomState takes seeds below 2**32


class StreamSampler(optuna.samplers.BaseSampler):
    """A sampler whose random stream no earlier run, and no other process, has drawn from.

    An Optuna sampler draws from one stream seeded when its process starts, so a resumed study
    drew its first trials' parameters again, and two processes on one study drew the same
    parameters in step. Here a stream is named by the trial it starts at, and a trial number is
    handed out once per study: the first process on an empty study draws the stream of
    `seed + worker` from trial 0 (reproducible under --seed); a process handed a trial that does
    not follow the one it ran last (it resumed a study, or another process took the trials in
    between) starts the stream `stream_seed(seed, worker, number)`. So two processes, or a run and
    its resumption, never draw from the same place of the same stream; model-based samplers
    (TPE, GP) also read every trial in the study, so they do not propose the finished ones again.

    `build(stream_seed)` makes the strategy's sampler for one stream.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int, worker: int = 0):
        self._build, self._seed, self._worker = build, seed, worker
        self.sampler = build(seed + worker)
        self._last = -1  # the trial this process ran last; -1: none, so trial 0 keeps the first stream

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.number != self._last:  # Optuna may announce one trial twice
            if trial.number != self._last + 1:
                self.sampler = self._build(stream_seed(self._seed, self._worker, trial.number))
            self._last = trial.number
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


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
    """The number of points in the grid product, counted without listing them; a SpaceError
    above gentune.search.space.GRID_CAP."""
    return space.grid_size()
