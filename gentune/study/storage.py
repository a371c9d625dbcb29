"""Storage for a study shared by many workers: URLs, heartbeats, and retries on a lost database.

Four kinds of URL:

- `sqlite:///path/study.db`: one machine (the default);
- `postgresql://user:pw@host:5432/db`: one database server, workers on many machines. Opened
  with psycopg 3 (`postgresql+psycopg://`); a plain `postgresql://` is rewritten to it unless
  psycopg2 is installed;
- `journal:///shared/path/study.log` (or any path ending in `.log`): Optuna's journal file, for
  machines that share a filesystem but no database server;
- `grpc://host:port`: a `gentune storage-proxy` (Optuna's gRPC storage proxy) in front of one of
  the above, so that many workers share the proxy's few database connections.

Every worker sends a heartbeat for its running trial; a trial whose heartbeat stops (its
process was killed, its machine lost) is marked failed by another worker and its parameters
are queued again. Optuna's journal storage and its gRPC proxy client have no heartbeats, so
`HeartbeatJournalStorage` and `HeartbeatGrpcStorage` add them. A worker that loses its database
connection (or its storage proxy) retries each call with backoff.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import json
import logging
import os
import random
import re
import shlex
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import GrpcStorageProxy, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from gentune.errors import StudyError
from gentune.extras import require
from gentune.trial.attrs import SystemKey, TrialKey

log = logging.getLogger(__name__)

HEARTBEAT_KEY = SystemKey.HEARTBEAT  # kept: the name other modules and tests import
STALE_CALLBACK = Callable[[optuna.Study, FrozenTrial], None]
DESCRIBE_STALE = Callable[[FrozenTrial], str]  # the `error` of a trial whose heartbeat stopped


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise StudyError(
            f"{name} must be a number of seconds",
            value=value,
            fix=f"unset {name} or set it to e.g. {default:g}",
        ) from None


def heartbeat_interval() -> int:
    """Seconds between a worker's heartbeats (GENTUNE_HEARTBEAT_INTERVAL, default 20)."""
    return max(1, int(_env_seconds("GENTUNE_HEARTBEAT_INTERVAL", 20)))


def grace_period() -> int:
    """Seconds without a heartbeat after which a trial counts as lost.

    GENTUNE_HEARTBEAT_GRACE, default 90."""
    return max(heartbeat_interval() + 1, int(_env_seconds("GENTUNE_HEARTBEAT_GRACE", 90)))


def retry_seconds() -> float:
    """How long a worker keeps retrying a lost database (GENTUNE_DB_RETRY_SECONDS, default 600)."""
    return _env_seconds("GENTUNE_DB_RETRY_SECONDS", 600)


def journal_path(url: str) -> Path | None:
    """The file of a journal URL (`journal:///abs/x.log`, `journal://rel/x.log`, `x.log`), else None."""
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://"))
    if "://" not in url and url.endswith(".log"):
        return Path(url)
    return None


def rdb_url(url: str) -> str:
    """Point a plain PostgreSQL URL at psycopg 3 when psycopg2 (SQLAlchemy's default) is absent."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return url


def grpc_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a `grpc://host:port` storage URL, None for other URLs.

    >>> grpc_address("grpc://127.0.0.1:13000"), grpc_address("sqlite:///x.db")
    (('127.0.0.1', 13000), None)
    """
    if not url.startswith("grpc://"):
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query:
        raise StudyError(
            "a grpc:// storage URL names the storage proxy's host and port, and nothing else",
            value=url,
            fix="pass e.g. grpc://127.0.0.1:13000 (the --host and --port of gentune storage-proxy)",
        )
    return parts.hostname, port


PROXY_WAIT_SECONDS = 20.0  # how long a worker waits for a storage proxy that is starting


def _open_proxy(url: str, host: str, port: int, on_stale: STALE_CALLBACK | None) -> HeartbeatGrpcStorage:
    require("grpc", "a grpc:// storage (gentune storage-proxy)")
    require("google.protobuf", "a grpc:// storage (gentune storage-proxy)")
    with warnings.catch_warnings():  # the proxy is experimental in Optuna; gentune tests it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = HeartbeatGrpcStorage(host, port, heartbeat_interval(), grace_period(), on_stale)
    try:
        storage.wait_server_ready(timeout=PROXY_WAIT_SECONDS)
    except ConnectionError:
        storage.close()
        raise StudyError(
            f"no storage proxy answered at {url} within {PROXY_WAIT_SECONDS:g} s",
            value=url,
            fix=f"start one with gentune storage-proxy --storage URL --host {host} --port {port}, "
            "or check the host and port",
        ) from None
    return storage


def make_storage(
    url: str, on_stale: STALE_CALLBACK | None, describe_stale: DESCRIBE_STALE | None = None
) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url` with heartbeats; `on_stale(study, trial)` runs for each lost
    trial, once it is failed with the `error` that `describe_stale(trial)` gives."""
    storage = _open_storage(url, on_stale)
    if isinstance(storage, (ResilientRDBStorage, AttrHeartbeat)):
        storage._describe_stale = describe_stale
    return storage


def _open_storage(url: str, on_stale: STALE_CALLBACK | None) -> optuna.storages.BaseStorage:
    address = grpc_address(url)
    if address is not None:
        return _open_proxy(url, *address, on_stale)
    path = journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        check_journal(path)
        return HeartbeatJournalStorage(
            JournalFileBackend(str(path)), heartbeat_interval(), grace_period(), on_stale
        )
    url = rdb_url(url)
    if url.startswith("postgresql") and importlib.util.find_spec("psycopg2") is None:
        require("psycopg", "a PostgreSQL storage")
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        # pool_pre_ping replaces connections that died (a database restart) before they are used.
        engine_kwargs = (
            {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
        )
        try:
            with warnings.catch_warnings():  # heartbeats are experimental in Optuna; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _new_rdb_storage(url, on_stale, engine_kwargs)
        except ImportError as e:
            raise StudyError(
                f"the database driver for {url.split(':')[0]} is missing: {e}",
                fix="pip install 'gentune[postgres]' and retry",
            ) from None
        except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many types for a bad server
            fix = (
                "check that the file's folder exists and is writable"
                if url.startswith("sqlite:")
                else "check that the database server runs and the URL's user, password, "
                "host, port and database name"
            )
            raise StudyError(
                f"cannot open the storage {hide_password(url)}: {hide_password(str(e))}", fix=fix
            ) from None
    try:
        return optuna.storages.get_storage(url)
    except Exception as e:  # noqa: BLE001 - Optuna raises several types for a bad URL
        raise StudyError(
            f"cannot open the storage {hide_password(url)!r}: {hide_password(str(e))}",
            fix="pass sqlite:///runs/x/study.db, postgresql://user:pass@host/db "
            "or journal:///shared/folder/study.log",
        ) from None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# user:PASSWORD@ of a URL inside other text: the password runs to the last "@" before a space, so
# one holding "@" or a shell's quotes (shlex.join) is hidden whole.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*:)\S*(?=@)")
# password=... in a URL's query (postgresql://u@host/db?password=...) or a libpq conninfo.
_PARAM_PASSWORD = re.compile(r"(\bpassword=)[^\s&'\"]*", re.IGNORECASE)


def _new_rdb_storage(url: str, on_stale: STALE_CALLBACK | None, engine_kwargs: dict) -> ResilientRDBStorage:
    """A ResilientRDBStorage; when two processes create one new database at the same moment,
    Optuna's schema set-up in the second fails (a table or its version row already exists), and
    opening it again finds the schema complete."""
    import sqlalchemy.exc as sa

    for attempt in range(5):
        try:
            return ResilientRDBStorage(
                url,
                heartbeat_interval=heartbeat_interval(),
                grace_period=grace_period(),
                heartbeat_stale_trial_callback=on_stale,
                engine_kwargs=engine_kwargs,
            )
        except (sa.IntegrityError, sa.OperationalError) as e:
            racing = isinstance(e, sa.IntegrityError) or "already exists" in str(e)
            if not racing or attempt == 4:
                raise
            time.sleep(0.2 * (1 + attempt))
    raise AssertionError("unreachable")


def check_journal(path: Path, settle_seconds: float = 1.0) -> None:
    """Refuse a journal file with a line that is not a JSON record (Optuna fails on it with a
    traceback, or glues its next record to it). A bad last line is read again after
    `settle_seconds`, since another worker may be writing it."""
    if not path.is_file():
        return
    for attempt in (0, 1):
        lines = path.read_bytes().splitlines(keepends=True)
        bad = next((i for i, line in enumerate(lines) if not _is_record(line)), None)
        if bad is None:
            return
        if bad == len(lines) - 1 and attempt == 0:
            time.sleep(settle_seconds)
            continue
        raise StudyError(
            f"the journal file {path} is corrupted: line {bad + 1} of {len(lines)} is not a complete "
            "JSON record",
            value=lines[bad][:80].decode(errors="replace"),
            fix="restore the file from a copy, or delete that line and every line after it (the "
            "trials they recorded are lost)",
        )


def _is_record(line: bytes) -> bool:
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def hide_password(text: str) -> str:
    """`text` with every password in it replaced by ***: a storage URL's (user:***@host, and
    ?password=***), or those of the URLs inside a message or a stored command line. gentune
    prints, stores and writes storage URLs only through this.

    >>> hide_password("postgresql://u:s3cr@t w@host:5432/db")
    'postgresql://u:***@host:5432/db'
    >>> hide_password("gentune worker --storage postgresql://u:p@ss@h/db --study s")
    'gentune worker --storage postgresql://u:***@h/db --study s'
    >>> hide_password("cannot open 'postgresql://u@h/db?sslmode=require&password=pw': refused")
    "cannot open 'postgresql://u@h/db?sslmode=require&password=***': refused"
    """
    scheme = _SCHEME.match(text)
    if scheme:
        # The text is one URL (a --storage value): its password may hold any character.
        creds, at, host = text[scheme.end() :].rpartition("@")
        if at and ":" in creds:
            text = f"{scheme.group()}{creds.split(':')[0]}:***@{host}"
    else:
        text = _URL_PASSWORD.sub(r"\1***", text)
    return _PARAM_PASSWORD.sub(r"\1***", text)


def hide_command_password(command: str) -> str:
    """A shell command line with every password hidden (`hide_password`), argument by argument,
    so that a quoted password holding spaces or quotes is hidden whole.

    >>> hide_command_password("gentune worker --storage='postgresql://u:a b@h/db' --study s")
    "gentune worker '--storage=postgresql://u:***@h/db' --study s"
    """
    try:
        args = shlex.split(command)
    except ValueError:  # not a command line after all (unbalanced quotes)
        return hide_password(command)
    hidden = []
    for arg in args:
        option, eq, value = arg.partition("=")
        hidden.append(
            option + eq + hide_password(value) if eq and option.startswith("--") else hide_password(arg)
        )
    # Rebuilt only when something was hidden: a command shown as it was typed reads best.
    return hide_password(command if hidden == args else shlex.join(hidden))


class AttrHeartbeat(optuna.storages.BaseStorage, BaseHeartbeat):
    """Heartbeats kept as a trial system attribute, for storages that have none of their own.

    They use each machine's clock: keep the machines' clocks within a few seconds of each other.
    """

    _interval: int
    _grace: int
    _on_stale: STALE_CALLBACK | None
    _describe_stale: DESCRIBE_STALE | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        except UpdateFinishedTrialError:  # it just finished, or another worker took it over
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        stale = [t._trial_id for t in running if now - t.system_attrs.get(HEARTBEAT_KEY, now) > self._grace]
        return _note_stale(self, stale, self._describe_stale)

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> STALE_CALLBACK | None:
        return self._on_stale


class HeartbeatJournalStorage(JournalStorage, AttrHeartbeat):
    """Optuna's journal storage with heartbeats (AttrHeartbeat).

    The journal is an append-only log replayed in order, so when two workers race to finish
    a trial, the first entry wins and the other gets UpdateFinishedTrialError.
    """

    def __init__(self, backend, interval: int, grace: int, on_stale: STALE_CALLBACK | None):
        super().__init__(backend)
        self._interval, self._grace, self._on_stale = interval, grace, on_stale


class HeartbeatGrpcStorage(GrpcStorageProxy, AttrHeartbeat):
    """A client of `gentune storage-proxy` (Optuna's gRPC storage proxy), with heartbeats.

    The proxy's protocol has no heartbeat call, so heartbeats are a trial system attribute, as on
    a journal; workers that reach the same database directly keep theirs in Optuna's heartbeat
    table, and neither kind sees the other's (so neither fails the other's running trials). A
    call that finds the proxy unreachable (restarting) is retried like a lost database.
    """

    def __init__(self, host: str, port: int, interval: int, grace: int, on_stale: STALE_CALLBACK | None):
        super().__init__(host=host, port=port)
        self._interval, self._grace, self._on_stale = interval, grace, on_stale


def _note_stale(
    storage: optuna.storages.BaseStorage, trial_ids: list[int], describe: DESCRIBE_STALE | None
) -> list[int]:
    """Store why each stale trial is about to be failed. Optuna fails it first and calls the
    stale-trial callback after, when a finished trial takes no more attributes; in the rare
    case that the trial's worker was only late and finishes it now, the note stays on it."""
    if describe is None:
        return trial_ids
    for trial_id in trial_ids:
        try:
            storage.set_trial_user_attr(trial_id, TrialKey.ERROR, describe(storage.get_trial(trial_id)))
        except UpdateFinishedTrialError:
            pass  # it finished, or another worker failed it first
    return trial_ids


# Storage failures that waiting does not cure, by SQLite's error name, PostgreSQL's SQLSTATE and
# errno: (what is wrong, the fix). Retried as lost connections, they took 10 minutes to fail.
_READ_ONLY = (
    "it is read-only",
    "gentune best, report and sample read a study without writing to it; to run trials, copy "
    "the database somewhere writable and pass --storage with the copy (or remount it read-write)",
)
_FULL = (
    "the disk (or the database's quota) is full",
    "free space where the database lives (df -h) and rerun the same command: finished trials are kept",
)
_DENIED = (
    "permission denied",
    "give this user write access to the database file and its folder (SQLite writes a journal "
    "file beside it), or pass --storage somewhere writable",
)
_CANNOT_OPEN = (
    "SQLite cannot open it, or the journal file it writes beside it",
    "check that the database's folder exists and that this user may write to it, or pass "
    "--storage somewhere writable",
)
_PERMANENT = {
    "SQLITE_READONLY": _READ_ONLY,
    "SQLITE_FULL": _FULL,
    "SQLITE_PERM": _DENIED,
    "SQLITE_CANTOPEN": _CANNOT_OPEN,
    "25006": _READ_ONLY,  # read_only_sql_transaction (a hot standby, default_transaction_read_only)
    "53100": _FULL,  # disk_full
    "42501": _DENIED,  # insufficient_privilege
    errno.EROFS: _READ_ONLY,
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
}


def storage_failure(exc: BaseException | None, url: str = "") -> StudyError | None:
    """A StudyError for a database that refuses writes for good (read-only, full, no
    permission), also when wrapped by SQLAlchemy or Optuna; None for anything else.

    >>> import sqlite3
    >>> err = sqlite3.connect("file::memory:?mode=ro", uri=True).execute
    >>> try:
    ...     err("CREATE TABLE t (x)")
    ... except sqlite3.OperationalError as e:
    ...     print(storage_failure(e, "sqlite:///x.db").rule)
    cannot write to the study's database: it is read-only (attempt to write a readonly database)
    """
    while exc is not None:
        for code in (
            getattr(exc, "sqlite_errorname", None),  # sqlite3
            getattr(exc, "sqlstate", None),  # psycopg 3
            getattr(exc, "pgcode", None),  # psycopg2
            exc.errno if isinstance(exc, OSError) else None,
        ):
            if code in _PERMANENT:
                what, fix = _PERMANENT[code]
                said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                return StudyError(
                    f"cannot write to the study's database: {what} ({said})",
                    value=hide_password(url) if url else None,
                    fix=fix,
                )
        exc = exc.__cause__ or exc.__context__
    return None


def is_connection_error(exc: BaseException | None) -> bool:
    """True for a lost or refused database connection (also when wrapped by Optuna)."""
    import sqlalchemy.exc as sa

    while exc is not None:
        if isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if _proxy_unreachable(exc):
            return True
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _proxy_unreachable(exc: BaseException) -> bool:
    """A gRPC call that found the storage proxy down (status UNAVAILABLE); grpc is not imported
    here, since it is an optional extra."""
    code = getattr(exc, "code", None)
    return (
        type(exc).__module__.startswith("grpc")
        and callable(code)
        and getattr(code(), "name", None) == "UNAVAILABLE"
    )


_nesting = threading.local()  # only the outermost storage call retries, not the calls inside it


def _retrying(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(_nesting, "depth", 0):
            return method(self, *args, **kwargs)
        _nesting.depth = 1
        try:
            return _call_with_retry(method, self, args, kwargs)
        finally:
            _nesting.depth = 0

    return call


def _call_with_retry(method: Callable, self, args, kwargs):
    """Call; on a lost connection wait (0.5 s doubling to 30 s, with jitter) and call again."""
    deadline = time.monotonic() + retry_seconds()
    delay, retried = 0.5, False
    while True:
        try:
            result = method(self, *args, **kwargs)
        except UpdateFinishedTrialError:
            if retried and _landed_before(self, method, args, kwargs):
                return True
            raise
        except Exception as e:
            failure = storage_failure(e, getattr(self, "url", ""))
            if failure is not None:
                raise failure from None
            if not is_connection_error(e) or time.monotonic() + delay > deadline:
                raise
            if not retried:
                log.warning(
                    "lost the study's database (%s); retrying for up to %.0f s",
                    type(e).__name__,
                    retry_seconds(),
                )
            time.sleep(delay * (0.5 + random.random()))  # jitter: workers do not retry in step
            delay, retried = min(delay * 2, 30.0), True
            continue
        if retried:
            log.warning("the study's database is back; %s went through", method.__name__)
        return result


def _landed_before(storage, method: Callable, args, kwargs) -> bool:
    """Whether a retried state change had already committed before the connection broke
    (the trial holds the asked state), rather than another worker having finished the trial."""
    if method.__name__ != "set_trial_state_values":
        return False
    trial_id, state = args[0], args[1] if len(args) > 1 else kwargs["state"]
    values = args[2] if len(args) > 2 else kwargs.get("values")
    stored = storage.get_trial(trial_id)
    return stored.state == state and (values is None or list(stored.values or []) == list(values))


class ResilientRDBStorage(RDBStorage):
    """RDBStorage whose calls survive a database restart: each is retried with backoff.

    A call is one transaction, so a retried call never leaves half an update behind. The
    one case a retry cannot tell apart, a commit that landed just as the connection broke,
    is handled for state changes (the retry sees the trial already finished) and is left
    for the rest, where it would at worst write the same attribute twice.
    """

    _describe_stale: DESCRIBE_STALE | None = None

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return _note_stale(self, RDBStorage._get_stale_trial_ids(self, study_id), self._describe_stale)


# Every call that reaches the database, including the private ones that Optuna's cache
# layer (_CachedStorage, which wraps any RDBStorage a study opens) calls directly.
_RETRIED = [
    name
    for name in dir(optuna.storages.BaseStorage)
    if not name.startswith("_") and name not in ("remove_session", "check_trial_is_updatable")
]
_RETRIED += [
    "record_heartbeat",
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_trials",
]
for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(getattr(ResilientRDBStorage, _name)))
# The proxy client's calls too, so that a worker rides out a proxy restart.
for _name in _RETRIED:
    if hasattr(HeartbeatGrpcStorage, _name):
        setattr(HeartbeatGrpcStorage, _name, _retrying(getattr(HeartbeatGrpcStorage, _name)))
