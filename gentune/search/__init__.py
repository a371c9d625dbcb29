"""Search spaces and strategies."""

from .space import CategoricalSpec, FloatSpec, IntSpec, SearchSpace, load_space_file
from .strategies import DEFAULT_STRATEGY, STRATEGIES, grid_size, make_sampler

__all__ = ["CategoricalSpec", "FloatSpec", "IntSpec", "SearchSpace", "load_space_file",
           "DEFAULT_STRATEGY", "STRATEGIES", "grid_size", "make_sampler"]
