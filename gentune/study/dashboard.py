"""`gentune dashboard STUDY`: optuna-dashboard on a study's storage, with its sample grids.

optuna-dashboard reads the study (values, parameters, the flat metrics to sort by, the learning
curves) from its storage and each trial's sample grids from the artifact store the trials
uploaded them to (gentune.trial.artifacts). It is an optional extra: `pip install
'gentune[dashboard]'`. The server is wsgiref's, threaded, as `optuna-dashboard` runs it by
default: for a person looking at a study, not for many users at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from gentune.errors import GentuneError
from gentune.extras import require
from gentune.study.storage import hide_password
from gentune.study.store import make_storage


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass  # one line per request would bury what gentune printed


def dashboard_server(study: str, storage: str, artifacts: Path, host: str, port: int) -> tuple[_Server, str]:
    """(a server ready to `serve_forever()`, the study's page in it) for `study` in `storage`.

    `artifacts` is the folder of the study's artifact store. Binding the port happens here, so
    a port in use is a message before anything is printed.
    """
    optuna_dashboard = require("optuna_dashboard", "gentune dashboard")
    from optuna.artifacts import FileSystemArtifactStore

    opened = make_storage(storage)
    try:
        study_id = opened.get_study_id_from_name(study)
    except KeyError:
        raise GentuneError(
            f"no study {study!r} in {hide_password(storage)}",
            value=study,
            fix="check the name, and --storage for a study stored elsewhere",
        ) from None
    with warnings.catch_warnings():  # the artifact store is experimental in some Optuna releases
        warnings.simplefilter("ignore")
        app = optuna_dashboard.wsgi(opened, artifact_store=FileSystemArtifactStore(artifacts))
    try:
        server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as e:
        raise GentuneError(
            f"gentune dashboard cannot listen on {host}:{port}: {e.strerror or e}",
            value=port,
            fix="pass --port with a free port, e.g. --port 8081",
        ) from None
    bound = server.server_address[1]
    return server, f"http://{host}:{bound}/dashboard/studies/{study_id}"
