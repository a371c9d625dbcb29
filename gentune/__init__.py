"""gentune: tune generative models by what they generate.

>>> import gentune
>>> gentune.__version__
'0.1.0'
"""

__version__ = "0.1.0"


def __getattr__(name):
    # The public API, imported on first use so that `import gentune` stays light.
    if name in ("tune", "run_objective", "best_summary"):
        from gentune import api

        return getattr(api, name)
    raise AttributeError(name)


__all__ = ["__version__", "tune", "run_objective", "best_summary"]
