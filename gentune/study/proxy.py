"""`gentune storage-proxy`: Optuna's gRPC storage proxy in front of a study's database.

Each worker that opens a PostgreSQL storage holds its own connections (one per thread that
talks to the database: the trial's and the heartbeat's), so a few hundred workers exhaust a
server's `max_connections`. The proxy holds one connection pool and serves every worker that
passes `--storage grpc://HOST:PORT`; their heartbeats and retries are in gentune.study.storage.

The proxy speaks plain gRPC, with neither authentication nor encryption: whoever can reach its
port can read and change every study in the database behind it. Listen on 127.0.0.1 or on a
private network only.
"""

from __future__ import annotations

import signal
import socket
import warnings
from typing import Any

import optuna

from gentune.errors import StudyError
from gentune.extras import require
from gentune.study.storage import grpc_address, hide_password, journal_path, make_storage


def proxy_url(host: str, port: int) -> str:
    """The storage URL that workers pass to reach a proxy on `host`:`port`.

    >>> proxy_url("127.0.0.1", 13000), proxy_url("::1", 13000)
    ('grpc://127.0.0.1:13000', 'grpc://[::1]:13000')
    """
    return f"grpc://[{host}]:{port}" if ":" in host else f"grpc://{host}:{port}"


def served_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage a proxy serves: a database (PostgreSQL, SQLite), with gentune's retries.

    Workers send the heartbeats through the proxy as trial attributes, so the storage here
    needs none of its own.
    """
    if grpc_address(url) is not None:
        raise StudyError(
            "a storage proxy serves a database, not another proxy",
            value=url,
            fix="pass the database URL the other proxy serves, e.g. postgresql://user:pw@host/db",
        )
    if journal_path(url) is not None:
        raise StudyError(
            "Optuna's storage proxy cannot serve a journal file",
            value=hide_password(url),
            fix="serve a PostgreSQL (or SQLite) storage, or let the workers open the journal directly",
        )
    require("grpc", "gentune storage-proxy")
    require("google.protobuf", "gentune storage-proxy")
    # Optuna's cache layer, as its proxy's documentation advises: finished trials are read once.
    return optuna.storages.get_storage(make_storage(url, on_stale=None))


def serve(storage: optuna.storages.BaseStorage, host: str, port: int) -> None:
    """Serve `storage` (from `served_storage`) on `host`:`port` until Ctrl-C or SIGTERM."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    _check_free(host, port)
    signal.signal(signal.SIGTERM, stop)  # a container's stop: exit as on Ctrl-C, with status 0
    try:
        with warnings.catch_warnings():  # the proxy is experimental in Optuna; gentune tests it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port)
    except RuntimeError as e:  # grpc cannot bind the address
        raise StudyError(
            f"the storage proxy cannot listen on {host}:{port}: {e}",
            value=f"{host}:{port}",
            fix="pass another --port (one no other program uses) or a --host of this machine",
        ) from None
    except KeyboardInterrupt:
        return


def _check_free(host: str, port: int) -> None:
    """Refuse a port another program listens on: grpc binds with SO_REUSEPORT, so a second
    proxy on the same port would start, and share the connections with the first at random."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a just-stopped proxy's port is free
        try:
            probe.bind((host, port))
        except OSError as e:
            raise StudyError(
                f"the storage proxy cannot listen on {host}:{port}: {e.strerror}",
                value=f"{host}:{port}",
                fix="pass another --port (one no other program uses) or a --host of this machine",
            ) from None
