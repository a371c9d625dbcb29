"""Optional dependencies: import them where they are used, with the install line when they are missing.

The extras are declared in pyproject.toml: ``gentune[postgres]`` (psycopg, for PostgreSQL
storages), ``gentune[report]`` (plotly and matplotlib, for the HTML and PNG reports),
``gentune[grpc]`` (grpcio and protobuf, for ``gentune storage-proxy`` and ``grpc://`` storages),
``gentune[dashboard]`` (optuna-dashboard, for ``gentune dashboard``) and ``gentune[mlflow]``
(MLflow's client, for ``gentune tune --mlflow``); ``gentune[all]`` installs them all.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from gentune.errors import GentuneError

# The extra that installs each optional module, and its name on PyPI.
EXTRAS = {
    "psycopg": ("postgres", "psycopg[binary]"),
    "plotly": ("report", "plotly"),
    "matplotlib": ("report", "matplotlib"),
    "grpc": ("grpc", "grpcio"),
    "google": ("grpc", "protobuf"),  # protobuf's module is google.protobuf
    "optuna_dashboard": ("dashboard", "optuna-dashboard"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}


def require(module: str, what: str) -> ModuleType:
    """Import `module` (or a submodule of a package in EXTRAS), which `what` needs; when it is
    not installed, a GentuneError names the extra that installs it.

    >>> require("plotly", "the HTML report").__name__
    'plotly'
    """
    top = module.partition(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"{top} is not an optional dependency of gentune; add it to EXTRAS")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # Only the package itself being absent is a missing extra; a broken install of it, or of
        # one of its own dependencies, must keep its own message.
        if e.name is None or e.name.partition(".")[0] != top:
            raise
    extra, package = EXTRAS[top]
    raise GentuneError(
        f"{what} needs the optional package {package}", fix=f"pip install 'gentune[{extra}]'"
    ) from None
