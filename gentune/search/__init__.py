"""Search spaces and strategies."""

from gentune.search.space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace, load_space_file
from gentune.search.strategies import DEFAULT_STRATEGY, STRATEGIES, grid_size, make_sampler

__all__ = [
    "CategoricalSpec",
    "FloatSpec",
    "IntSpec",
    "SearchSpace",
    "load_space_file",
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "grid_size",
    "make_sampler",
]
