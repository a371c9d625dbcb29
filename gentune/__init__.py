"""gentune: tune generative models by what they generate.

>>> import gentune
>>> gentune.__version__
'0.1.0'
"""

from gentune.version import __version__


def __getattr__(name):
    # The public API, imported on first use so that `import gentune` stays light.
    if name in _API:
        from gentune import api

        return getattr(api, name)
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(name)


_API = (
    "tune",
    "run_objective",
    "best_summary",
    "Budget",
    "DatasetRef",
    "EarlyStop",
    "Phases",
    "RunOptions",
    "SearchOptions",
    "TuneResult",
)
# Used inside a user's own code, so reached without importing the API's phases and studies.
_MODULES = {
    "load": "gentune.generator",
    "Generator": "gentune.generator",
    "score": "gentune.metrics.score",
    "Score": "gentune.metrics.score",
    "Recorder": "gentune.trial.record",
}
__all__ = ["__version__", *_API, *_MODULES]
